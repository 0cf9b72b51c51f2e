"""Where a run's wall time went: the training steps, and everything around them.

On small data (users' own folders) the time outside the steps (start-up, building each epoch's
input, validation, checkpoints and model files) can rival the steps themselves, so fit measures
it and says so in its last line (and `tools/bench_fit.py --loop` reports it), instead of leaving
users to compare their wall clock with the images/s of the history.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

STEPS = "training steps"
FIRST_STEP = "first step (tracing)"
VALIDATION = "validation"


class Timings:
    """Seconds per named phase, and the wall time from construction to `stop` (or to now)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.end: float | None = None
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Counts the time spent inside the ``with`` block towards ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def stop(self) -> None:
        """Ends the wall time (fit's, at its return: its result is read later)."""
        self.end = time.perf_counter()

    def wall(self) -> float:
        return (time.perf_counter() if self.end is None else self.end) - self.start

    def outside_steps(self) -> float:
        """The share of the wall time not spent in training steps, in [0, 1]."""
        wall = self.wall()
        return max(0.0, 1.0 - self.seconds.get(STEPS, 0.0) / wall) if wall > 0 else 0.0

    def describe(self) -> str:
        """One line: the wall time, the steps' share, and the other phases, longest first."""
        wall = self.wall()
        steps = self.seconds.get(STEPS, 0.0)
        others = sorted(((s, n) for n, s in self.seconds.items() if n != STEPS), reverse=True)
        unaccounted = wall - steps - sum(s for s, _ in others)
        parts = [f"{name} {seconds:.1f} s" for seconds, name in others]
        if unaccounted > 0.05:
            parts.append(f"other {unaccounted:.1f} s")
        return f"wall time {wall:.1f} s: training steps {steps:.1f} s ({1 - self.outside_steps():.0%}); " + ", ".join(
            parts
        )
