"""The one exception type for bad user input (files, keys, parameters), its one message style, and
how a message names a parameter for whoever called: a Python caller or the command line.

Library code raises `InputError` with a one-line message that names the file, key or parameter
and says what is wrong or what to do; the CLI turns it into that line on stderr and a non-zero
exit, no traceback. Anything else that escapes is a bug and keeps its traceback.

The library names its parameters by their Python names, never by a command-line flag (it does
not know how it was called): in backticks, ```overwrite```, or with a value, ```overwrite=True```,
listed in the error's `parameters`. A bad argument value is worded as Keras words it (`invalid`):
``"`batch_size` must be a positive integer. Received: batch_size=0"``. That is what a Python
caller reads. The command line (`alexnet_tf.cli`) alone knows which flag sets which parameter:
while a command runs it installs its `Spelling` (`spelling`), and `message` words an error with
it: ``pass `overwrite=True` to replace it`` becomes ``pass --overwrite to replace it``, an
`invalid` value ``--batch-size 0: must be a positive integer``. A parameter the command has no
flag for keeps its Python name. The few lines the library prints itself (notices) go through
`worded` the same way.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class InputError(ValueError):
    """Bad input from the user: a missing file, an unknown key, an invalid argument value.

    ``parameters``: the parameters the message names (in backticks, see the module docstring),
    which the command line words as its flags.
    """

    def __init__(self, message: str, parameters: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.parameters = tuple(parameters)


class InvalidArgument(InputError):
    """An argument value that is not what its parameter requires (`invalid`)."""

    def __init__(self, name: str, value: Any, requirement: str) -> None:
        super().__init__(f"`{name}` must be {requirement}. Received: {name}={value!r}", (name,))
        self.name = name
        self.value = value
        self.requirement = requirement


def invalid(name: str, value: Any, requirement: str) -> InvalidArgument:
    """The error for argument ``name`` whose ``value`` is not ``requirement``, in Keras' style."""
    return InvalidArgument(name, value, requirement)


# The marker of "no value": a parameter named alone, ```overwrite```.
NAME_ONLY: Any = object()
# How the caller spells parameter ``name`` (with ``value``, or `NAME_ONLY`); None: as Python does.
Spelling = Callable[[str, Any], str | None]

_spelling: Spelling | None = None
_NAMED = re.compile(r"`([A-Za-z_]\w*)(?:=([^`]*))?`")


@contextlib.contextmanager
def spelling(spell: Spelling) -> Iterator[None]:
    """While inside, `message` and `worded` spell parameters with ``spell`` (the command line's
    flags). One at a time per process: the command line runs one command."""
    global _spelling
    previous, _spelling = _spelling, spell
    try:
        yield
    finally:
        _spelling = previous


def worded(text: str, parameters: Iterable[str]) -> str:
    """``text`` with each of ``parameters`` that it names (```name``` or ```name=value```) spelled
    as the caller spells it: unchanged for a Python caller, the flag under the command line."""
    spell, names = _spelling, set(parameters)
    if spell is None or not names:
        return text

    def respell(match: re.Match) -> str:
        name, value = match.groups()
        if name not in names:
            return match.group(0)
        spelled = spell(name, NAME_ONLY if value is None else _literal(value))
        return match.group(0) if spelled is None else spelled

    return _NAMED.sub(respell, text)


def message(error: BaseException) -> str:
    """``error``'s message for its reader: `worded`, and an `invalid` value under the command line
    in its own style, ``--flag value: must be …``."""
    if isinstance(error, InvalidArgument) and _spelling is not None:
        spelled = _spelling(error.name, error.value)
        if spelled is not None:
            return f"{spelled}: must be {error.requirement}"
    return worded(str(error), getattr(error, "parameters", ()))


def _literal(text: str) -> Any:
    """The value a message wrote as ``repr`` (``'two-tower'``, ``2``, ``True``); else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
