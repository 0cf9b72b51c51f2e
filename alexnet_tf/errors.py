"""The one exception type for bad user input (files, keys, flags).

Library code raises `InputError` with a one-line message that names the file, key or flag and
says what to do; the CLI turns it into that line on stderr and a non-zero exit, no traceback.
Anything else that escapes is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user: a missing file, an unknown key, an invalid flag value."""
