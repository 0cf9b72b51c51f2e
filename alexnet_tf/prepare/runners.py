"""Where prepare-data and index-records run their shard tasks: ``--runner local`` or ``--runner beam``.

``local`` (the default) is this machine's process pool (`alexnet_tf.prepare.workers`): a progress
bar, and an exact resume from the finished shards. ``beam`` is one Apache Beam job
(`alexnet_tf.prepare.beam_runner`) on the runner that ``--beam-options`` names: the DirectRunner
here, or Dataflow, Flink or Spark for datasets past one machine. Both run the same task function
on the same shard plan, so they write the same records and metadata.

Apache Beam is an optional extra (``pip install "alexnet-tf[beam]"``), imported by `load_beam`
only when a run asks for it: the command line's help and the local pool never load it, and
without it ``--runner beam`` is one line saying how to install it.
"""

from __future__ import annotations

import contextlib
import logging
import types
from collections.abc import Iterator

from alexnet_tf.constants import BEAM_RUNNER, RUNNERS
from alexnet_tf.errors import InputError, invalid

INSTALL = 'pip install "alexnet-tf[beam]"'


def check(runner: str, beam_options: str | None, workers: int | None) -> None:
    """Refuses, in one line, a runner with options that belong to the other one."""
    if runner not in RUNNERS:
        raise invalid("runner", runner, f"one of {', '.join(RUNNERS)}")
    if beam_options is not None and runner != BEAM_RUNNER:
        raise InputError(
            f"`beam_options={beam_options!r}`: only for `runner={BEAM_RUNNER!r}`; add it or drop the options",
            ("beam_options", "runner"),
        )
    if workers is not None and runner == BEAM_RUNNER:
        raise InputError(
            f"`workers={workers!r}`: the local pool's; with `runner={BEAM_RUNNER!r}` the runner's options choose "
            "the workers (the DirectRunner's: "
            "`beam_options='direct_num_workers=N,direct_running_mode=multi_processing'`)",
            ("workers", "runner", "beam_options"),
        )


def load_beam() -> types.ModuleType:
    """`alexnet_tf.prepare.beam_runner`, importing Apache Beam; `InputError` saying how to install it."""
    try:
        with _root_logging_untouched():
            import apache_beam  # noqa: F401
        from alexnet_tf.prepare import beam_runner
    except ImportError as error:
        raise InputError(f"`runner={BEAM_RUNNER!r}` needs Apache Beam ({error}): {INSTALL}", ("runner",)) from None
    return beam_runner


@contextlib.contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """apache_beam's import calls `logging.warning` (about an optional Google Cloud client), which
    prints that warning and gives the root logger a handler that then prints every later warning
    of every library with a ``WARNING:name:`` prefix. A handler of ours while it imports keeps
    basicConfig from running; the warning goes nowhere."""
    root, silent = logging.getLogger(), logging.NullHandler()
    root.addHandler(silent)
    try:
        yield
    finally:
        root.removeHandler(silent)
