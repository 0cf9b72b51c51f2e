"""Training input pipeline throughput against the bare JPEG-decoding limit, measured in one run.

    python tools/bench_pipeline.py                      # synthesises 4,096 256×256 records
    python tools/bench_pipeline.py --data-dir D         # prepare-data output (train split)

Both pipelines read the same train shards with the same parallel interleave and AUTOTUNE map:

* limit: read + ``tf.io.decode_jpeg`` of the whole image + batch (uint8);
* full:  ``alexnet_tf.data.pipeline.train_dataset``: shuffle, crop decoded with
  ``decode_and_crop_jpeg``, mirror, PCA lighting, mean-image subtraction, float output, batch.

Rounds alternate limit / full / limit / full … so load from other processes hits both alike; each
timing starts after warm-up batches on a fresh iterator. Reports the median images/s (wall clock)
and images per CPU-second of this process (images/s per core), and full / limit ratios of both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alexnet_tf.data import pipeline, schema, synthetic  # noqa: E402
from alexnet_tf.data.metadata import DatasetMetadata  # noqa: E402


def limit_dataset(data_dir: str, batch_size: int) -> tf.data.Dataset:
    """Read + full decode + batch, with the training pipeline's reading and parallelism."""
    files = pipeline.split_files(data_dir, DatasetMetadata.load(data_dir), schema.TRAIN)

    def decode(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = schema.parse_example(serialized)
        return tf.io.decode_jpeg(features[schema.ENCODED], channels=3), features[schema.LABEL]

    records = pipeline.interleave_records(files).repeat()
    dataset = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def measure(make: Callable[[], tf.data.Dataset], batches: int, warmup: int, batch_size: int) -> tuple[float, float]:
    """(images per second, images per CPU-second) over ``batches`` batches after ``warmup``."""
    iterator = iter(make())
    for _ in range(warmup):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del iterator
    images = batches * batch_size
    return images / wall, images / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="prepare-data output; default: synthesise records in a temp dir")
    parser.add_argument("--records", type=int, default=4096, help="synthetic train records")
    parser.add_argument("--shards", type=int, default=16, help="synthetic train shards")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=pipeline.DTYPES)
    parser.add_argument("--mean", default=pipeline.MEAN_IMAGE, choices=pipeline.MEAN_MODES)
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = tmp
            print(f"writing {args.records} synthetic 256x256 records in {args.shards} shards ...", flush=True)
            synthetic.write_synthetic_dataset(
                tmp, train_records=args.records, train_shards=args.shards, validation_records=0, validation_shards=0
            )
        config = pipeline.InputConfig(
            data_dir, batch_size=args.batch_size, shuffle_buffer=args.shuffle_buffer, dtype=args.dtype, mean=args.mean
        )
        candidates = {
            "limit (read + full decode_jpeg)": lambda: limit_dataset(data_dir, args.batch_size),
            f"full training pipeline ({args.dtype}, mean {args.mean})": lambda: pipeline.train_dataset(config),
        }
        results = {name: [] for name in candidates}
        for round_index in range(args.rounds):
            for name, make in candidates.items():
                rate, per_cpu = measure(make, args.batches, args.warmup, args.batch_size)
                results[name].append((rate, per_cpu))
                print(f"round {round_index + 1}: {name}: {rate:,.0f} img/s, {per_cpu:,.0f} img/CPU-s", flush=True)

    cores = len(os.sched_getaffinity(0))
    print(f"\n{cores} cores, load average {os.getloadavg()[0]:.1f}; medians over {args.rounds} rounds "
          f"of {args.batches} batches of {args.batch_size}:")  # fmt: skip
    medians = {
        name: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in results.items()
    }
    for name, (rate, per_cpu) in medians.items():
        print(f"  {name:<45} {rate:8,.0f} img/s  {rate / cores:7,.0f} img/s per core  {per_cpu:7,.0f} img/CPU-s")
    (limit_rate, limit_cpu), (full_rate, full_cpu) = medians.values()
    print(f"  full / limit: {full_rate / limit_rate:.0%} of the wall-clock rate, "
          f"{full_cpu / limit_cpu:.0%} of the per-CPU-second rate")  # fmt: skip


if __name__ == "__main__":
    main()
