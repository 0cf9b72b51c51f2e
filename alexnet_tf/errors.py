"""The one exception type for bad user input (files, keys, flags), and its one message style.

Library code raises `InputError` with a one-line message that names the file, key or argument
and says what is wrong or what to do; the CLI turns it into that line on stderr and a non-zero
exit, no traceback. Anything else that escapes is a bug and keeps its traceback.

A bad argument value is worded as Keras words it (`invalid`):
``"`batch_size` must be a positive integer. Received: batch_size=0"``. Command-line flags are
checked by click before they reach the library, so its messages name the flag.
"""

from typing import Any


class InputError(ValueError):
    """Bad input from the user: a missing file, an unknown key, an invalid argument value."""


def invalid(name: str, value: Any, requirement: str) -> InputError:
    """The error for argument ``name`` whose ``value`` is not ``requirement``, in Keras' style."""
    return InputError(f"`{name}` must be {requirement}. Received: {name}={value!r}")
