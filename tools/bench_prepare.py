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

Without ``--images`` it writes a synthetic folder of ImageNet-sized JPEGs
(`alexnet_tf.data.synthetic`) in a temporary directory. Run it on a quiet machine:

    python tools/bench_prepare.py --count 2000 --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# images.py does not import TensorFlow, so the bare loop's workers start fast.
from alexnet_tf.data.images import ImageOptions, prepare_image


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


def prepare_rates(
    source: str, output: str, workers: int, shards: int, stats_sample: int | None
) -> tuple[float, float]:
    """`prepare_dataset`'s images/s over ``source``: end to end (listing, start-up and metadata
    included), and after start-up (from its first converted image on)."""
    from alexnet_tf.data.prepare import PrepareConfig, prepare_dataset

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


def main() -> None:
    from alexnet_tf.data.prepare import default_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="a dataset root (train/<class>/...); default: a synthetic one")
    parser.add_argument("--count", type=int, default=2000, help="synthetic images to generate")
    parser.add_argument("--workers", type=int, default=default_workers(), help="N for the N-worker runs")
    parser.add_argument("--shards", type=int, default=64, help="training shards (tasks) for prepare-data")
    parser.add_argument(
        "--stats-sample", type=int, help="prepare-data's --stats-sample (default: statistics over every image)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating bare/prepare-data rounds; the best round of each counts"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.data.synthetic import write_image_folder

    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as scratch:
        source = args.images
        if source is None:
            source = os.path.join(scratch, "source")
            print(f"writing {args.count} synthetic JPEGs to {source} ...", flush=True)
            write_image_folder(source, classes=10, per_class=max(args.count // 10, 1))
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(os.path.join(source, "train"))
            for name in names
            if not name.startswith(".")
        )
        bare_convert(paths[0])  # warm the page cache and Pillow's plugins alike for both
        print(
            f"{len(paths)} images, {os.cpu_count()} CPUs; best of {args.rounds} rounds; "
            "images/s after start-up (end to end in brackets)"
        )
        steady = {}
        for workers in sorted({1, args.workers}):
            # Alternate the two so that load from other processes hits both alike; keep the best.
            bare, bare_steady, prepared, steady[workers] = 0.0, 0.0, 0.0, 0.0
            for round_index in range(args.rounds):
                rates = bare_rates(paths, workers)
                bare, bare_steady = max(bare, rates[0]), max(bare_steady, rates[1])
                output = os.path.join(scratch, f"out{workers}_{round_index}")
                rates = prepare_rates(source, output, workers, args.shards, args.stats_sample)
                prepared, steady[workers] = max(prepared, rates[0]), max(steady[workers], rates[1])
            print(
                f"  {workers} worker(s): bare loop {bare_steady:6.1f} ({bare:6.1f})   prepare-data "
                f"{steady[workers]:6.1f} ({prepared:6.1f})   overhead {1 - steady[workers] / bare_steady:6.1%} "
                f"({1 - prepared / bare:6.1%})",
                flush=True,
            )
        if args.workers > 1:
            print(f"  prepare-data speed-up 1 -> {args.workers} workers: {steady[args.workers] / steady[1]:.2f}x")

if __name__ == "__main__":
    main()
