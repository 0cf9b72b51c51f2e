"""Benchmark: prepare-data's images/s against a bare decode→resize→encode loop, same files, same run.

The bare loop calls the same image function as prepare-data (`images.prepare_image`: Pillow
decode with JPEG draft reduction, the §2 shorter-side-256 centre crop as one resize, JPEG
encode) on each file read with plain `open`, with nothing around it, and throws the result
away. prepare-data adds what makes it a tool:
worker processes (spawned, each importing TensorFlow), TFRecord serialisation and writing,
the exact statistics of every training image, checkpoints and the metadata.
Both run with 1 and N processes, in alternating rounds (the best round of each counts, so that
load from other processes hits both alike), and are timed twice: end to end, and after start-up (from the
first converted image to the last — what a long run converges to; a spawned prepare-data worker
spends a few seconds importing TensorFlow, a bare one does not):

    overhead = 1 - prepare_rate / bare_rate          (the issue's aim: <= 25%)
    speed-up = prepare_rate(N workers) / prepare_rate(1 worker)   (aim: >= 1.7x for N = 2)

``--runner beam`` compares the two runners of prepare-data instead, on the same files in
alternating rounds: the local pool (N workers) and the Apache Beam DirectRunner in multi-process
mode (``direct_num_workers=N``), each timed end to end and between its first and last finished
shard (the shards' modification times: the same measure for both, without either's start-up),
and by the CPU time all their processes used per image (what a busy machine does not distort):

    ratio = DirectRunner rate / local pool rate

Without ``--images`` it writes a synthetic folder of ImageNet-sized JPEGs
(`alexnet_tf.synthetic`) in a temporary directory. Run it on a quiet machine:

    python tools/bench_prepare.py --count 2000 --workers 2
    python tools/bench_prepare.py --count 2000 --workers 2 --runner beam
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import tempfile
import time

import click

from alexnet_tf.constants import BEAM_RUNNER, LOCAL_RUNNER, RUNNERS
from alexnet_tf.prepare.convert import PrepareConfig, default_workers, prepare_dataset
from alexnet_tf.prepare.images import ImageOptions, prepare_image
from alexnet_tf.synthetic import write_image_folder


def bare_convert(path: str) -> int:
    """One image through decode → §2 crop-resize → JPEG encode; returns the encoded size."""
    with open(path, "rb") as f:
        return len(prepare_image(f.read(), ImageOptions()).encoded)


def bare_rates(paths: list[str], workers: int) -> tuple[float, float]:
    """The bare loop's images/s on ``workers`` processes: end to end, and after start-up."""
    started = time.perf_counter()
    if workers == 1:
        results = map(bare_convert, paths)
        first = None
        for done, _ in enumerate(results, start=1):
            first = first or (time.perf_counter(), done)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            first = None
            for done, _ in enumerate(pool.imap_unordered(bare_convert, paths, chunksize=8), start=1):
                first = first or (time.perf_counter(), done)
    ended = time.perf_counter()
    return len(paths) / (ended - started), (len(paths) - first[1]) / (ended - first[0])


def prepare_rates(source: str, output: str, workers: int, shards: int, stats_sample: int | None) -> tuple[float, float]:
    """`prepare_dataset`'s images/s over ``source``: end to end (listing, start-up and metadata
    included), and after start-up (from its first converted image on)."""
    config = PrepareConfig(
        source=source,
        output=output,
        train_shards=shards,
        stats_sample=stats_sample,
        workers=workers,
        overwrite=True,
        progress=False,
    )
    started = time.perf_counter()
    report = prepare_dataset(config)
    return report.processed / (time.perf_counter() - started), report.steady_rate


def runner_rates(source: str, output: str, runner: str, workers: int, shards: int) -> tuple[float, float, float]:
    """prepare-data's images/s on ``runner`` with ``workers`` processes: end to end, between the
    first and the last shard renamed into place (images of the shards after the first one), and
    per CPU second of this process and all its (waited-for) descendants."""
    beam = f"direct_num_workers={workers},direct_running_mode=multi_processing"
    config = PrepareConfig(
        source=source,
        output=output,
        train_shards=shards,
        workers=workers if runner == LOCAL_RUNNER else None,
        runner=runner,
        beam_options=beam if runner == BEAM_RUNNER else None,
        progress=False,
    )
    cpu, started = cpu_seconds(), time.perf_counter()
    report = prepare_dataset(config)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    finished = sorted(
        (os.stat(os.path.join(output, s.name)).st_mtime, s.records) for s in report.metadata.splits["train"].shards
    )
    later = sum(records for _, records in finished[1:])
    return report.processed / seconds, later / (finished[-1][0] - finished[0][0]), report.processed / cpu


def cpu_seconds() -> float:
    """User and system CPU time of this process and of its children that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")


def compare_runners(source: str, count: int, workers: int, shards: int, rounds: int, scratch: str) -> None:
    """The local pool against the Beam DirectRunner, alternating rounds, the best of each."""
    print(
        f"{count} images, {shards} shards, {os.cpu_count()} CPUs ({cpu_model()}); {workers} workers; best of "
        f"{rounds} rounds; images/s between the first and last finished shard [end to end] (per CPU second)"
    )
    best = {runner: (0.0, 0.0, 0.0) for runner in RUNNERS}
    for round_index in range(rounds):
        for runner in RUNNERS:
            rates = runner_rates(source, os.path.join(scratch, f"{runner}{round_index}"), runner, workers, shards)
            best[runner] = tuple(max(pair) for pair in zip(best[runner], rates, strict=True))
            print(f"  round {round_index + 1}, {runner}: {_rates(rates)}", flush=True)
    local, beam = best[LOCAL_RUNNER], best[BEAM_RUNNER]
    print(f"  local pool:         {_rates(local)}")
    print(f"  Beam DirectRunner:  {_rates(beam)}")
    print(f"  DirectRunner / local pool: {_rates(tuple(b / a for a, b in zip(local, beam, strict=True)), 'x')}")


def _rates(rates: tuple[float, ...], unit: str = "") -> str:
    end_to_end, steady, per_cpu = rates
    return f"{steady:6.2f}{unit} [{end_to_end:6.2f}{unit}] ({per_cpu:6.2f}{unit})"


@click.command(help=__doc__.splitlines()[0])
@click.option("--images", help="A dataset root (train/<class>/...); default: a synthetic one.")
@click.option("--count", type=click.IntRange(min=10), default=2000, show_default=True, help="Synthetic images.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=default_workers(),
    show_default=True,
    help="N for the N-worker runs.",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Training shards (tasks) for prepare-data.",
)
@click.option(
    "--stats-sample",
    type=click.IntRange(min=1),
    help="prepare-data's --stats-sample (default: statistics over every image).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Alternating bare/prepare-data rounds; the best round of each counts.",
)
@click.option(
    "--runner",
    type=click.Choice(RUNNERS),
    default=LOCAL_RUNNER,
    show_default=True,
    help="local: prepare-data against the bare loop; beam: the local pool against the Beam DirectRunner.",
)
def main(
    images: str | None, count: int, workers: int, shards: int, stats_sample: int | None, rounds: int, runner: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as scratch:
        source = images
        if source is None:
            source = os.path.join(scratch, "source")
            print(f"writing {count} synthetic JPEGs to {source} ...", flush=True)
            write_image_folder(source, classes=10, per_class=max(count // 10, 1))
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(os.path.join(source, "train"))
            for name in names
            if not name.startswith(".")
        )
        bare_convert(paths[0])  # warm the page cache and Pillow's plugins alike for both
        if runner == BEAM_RUNNER:
            compare_runners(source, len(paths), workers, shards, rounds, scratch)
            return
        print(
            f"{len(paths)} images, {os.cpu_count()} CPUs; best of {rounds} rounds; "
            "images/s after start-up (end to end in brackets)"
        )
        steady = {}
        for n in sorted({1, workers}):
            # Alternate the two so that load from other processes hits both alike; keep the best.
            bare, bare_steady, prepared, steady[n] = 0.0, 0.0, 0.0, 0.0
            for round_index in range(rounds):
                rates = bare_rates(paths, n)
                bare, bare_steady = max(bare, rates[0]), max(bare_steady, rates[1])
                output = os.path.join(scratch, f"out{n}_{round_index}")
                rates = prepare_rates(source, output, n, shards, stats_sample)
                prepared, steady[n] = max(prepared, rates[0]), max(steady[n], rates[1])
            print(
                f"  {n} worker(s): bare loop {bare_steady:6.1f} ({bare:6.1f})   prepare-data "
                f"{steady[n]:6.1f} ({prepared:6.1f})   overhead {1 - steady[n] / bare_steady:6.1%} "
                f"({1 - prepared / bare:6.1%})",
                flush=True,
            )
        if workers > 1:
            print(f"  prepare-data speed-up 1 -> {workers} workers: {steady[workers] / steady[1]:.2f}x")


if __name__ == "__main__":
    main()
