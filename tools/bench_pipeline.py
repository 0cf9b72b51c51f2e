"""Training input pipeline throughput against the bare JPEG-decoding limit, measured in one run.

    python tools/bench_pipeline.py                   # synthesises 4,096 256×256 records in a temp dir
    python tools/bench_pipeline.py --data-dir D      # prepare-data output (its train split)

All pipelines read the same train shards with the same parallel interleave and AUTOTUNE map:

* limit: read + ``tf.io.decode_jpeg`` of the whole 256×256 image + batch (uint8);
* with ``--breakdown``, the limit again with a cast to the output dtype before batching: what
  producing float images costs by itself, before any augmentation;
* full: ``InputPipeline.train_dataset`` (`alexnet_tf.input.pipeline`) at the paper's settings: shuffle, crop
  decoded with ``decode_and_crop_jpeg``, mirror, mean-image subtraction, PCA lighting, float32
  output, batch;
* with ``--breakdown`` (default) also the same pipeline with lighting off, and with lighting and
  mean subtraction off, to show what each step costs;
* uint8 views: the same training pipeline with ``normalize_in_model=True``, which stops at the
  uint8 crop and leaves mirror, cast, mean and lighting to the model's `ViewNormalization` layer
  on the training device. That layer's own rate on this machine's CPU is measured afterwards
  (on a GPU host it runs on the GPU instead).

Rounds alternate between the pipelines so load from other processes hits all alike; each timing
starts on a fresh iterator after warm-up batches. Reported per pipeline: the best and the median
round, as images/s (wall clock), images/s per core, and images per CPU-second of this process,
and each as a fraction of the limit (best / best, median / median).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

import click
import tensorflow as tf

from alexnet_tf import synthetic
from alexnet_tf.input import pipeline, shards
from alexnet_tf.network.layers import MEAN_NONE
from alexnet_tf.records import schema


def limit_dataset(data_dir: str, batch_size: int, dtype: str | None = None) -> tf.data.Dataset:
    """Read + full decode (+ cast to ``dtype``) + batch, with the training pipeline's reading and parallelism."""
    files = pipeline.InputPipeline(pipeline.InputConfig(data_dir)).files(schema.TRAIN)

    def decode(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = schema.parse_example(serialized)
        image = tf.io.decode_jpeg(features[schema.ENCODED], channels=3)
        return (image if dtype is None else tf.cast(image, dtype)), features[schema.LABEL]

    records = shards.interleave_records(files).repeat()
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


@click.command()
@click.option("--data-dir", help="prepare-data output; default: synthesise records in a temp dir.")
@click.option("--records", default=4096, show_default=True, help="Synthetic train records.")
@click.option("--shards", default=16, show_default=True, help="Synthetic train shards.")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--batches", default=15, show_default=True, help="Timed batches per round.")
@click.option("--warmup", default=3, show_default=True, help="Untimed batches per round.")
@click.option("--rounds", default=5, show_default=True)
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(pipeline.DTYPES))
@click.option("--shuffle-buffer", default=10_000, show_default=True)
@click.option("--breakdown/--no-breakdown", default=True, show_default=True, help="Also time partial pipelines.")
def main(data_dir, records, shards, batch_size, batches, warmup, rounds, dtype, shuffle_buffer, breakdown) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if data_dir is None:
            data_dir = tmp
            click.echo(f"writing {records} synthetic 256x256 records in {shards} shards ...")
            synthetic.write_synthetic_dataset(
                tmp, train_records=records, train_shards=shards, validation_records=0, validation_shards=0
            )

        def train(**options) -> Callable[[], tf.data.Dataset]:
            options = {"normalize_in_model": False, **options}
            config = pipeline.InputConfig(
                data_dir, batch_size=batch_size, shuffle_buffer=shuffle_buffer, dtype=dtype, **options
            )
            return pipeline.InputPipeline(config).train_dataset

        candidates = {"limit: read + full decode_jpeg": lambda: limit_dataset(data_dir, batch_size)}
        if breakdown:
            candidates[f"limit + cast to {dtype}"] = lambda: limit_dataset(data_dir, batch_size, dtype)
            candidates["crop + mirror + cast"] = train(mean=MEAN_NONE, lighting_strength=0)
            candidates["  + mean image"] = train(lighting_strength=0)
        candidates[f"full: + PCA lighting ({dtype})"] = train()
        candidates["uint8 views (normalize_in_model)"] = train(normalize_in_model=True)
        results = {name: [] for name in candidates}
        for round_index in range(rounds):
            for name, make in candidates.items():
                results[name].append(measure(make, batches, warmup, batch_size))
            click.echo(f"round {round_index + 1}/{rounds}: " + ", ".join(f"{r[-1][0]:,.0f}" for r in results.values()))

        layer_rate = measure_view_normalization(data_dir, batch_size, batches, dtype)

    cores = len(os.sched_getaffinity(0))
    click.echo(
        f"\n{cores} cores, load average {os.getloadavg()[0]:.1f}; "
        f"{rounds} rounds of {batches} batches of {batch_size}; best (median) of rounds:"
    )
    click.echo(f"  {'pipeline':<34} {'images/s':>17} {'per core':>15} {'images/CPU-s':>15} {'of limit':>11}")
    summary = {}
    for name, runs in results.items():
        rates, per_cpu = [r for r, _ in runs], [c for _, c in runs]
        summary[name] = (max(rates), statistics.median(rates), max(per_cpu), statistics.median(per_cpu))
    limit = summary[next(iter(summary))]
    for name, (best, median, best_cpu, median_cpu) in summary.items():
        click.echo(
            f"  {name:<34} {best:>7,.0f} ({median:>7,.0f}) {best / cores:>6,.0f} ({median / cores:>6,.0f})"
            f" {best_cpu:>6,.0f} ({median_cpu:>6,.0f}) {best / limit[0]:>4.0%} ({median / limit[1]:>4.0%})"
        )
    click.echo(
        f"  ViewNormalization on this CPU, batch {batch_size}: {layer_rate:,.0f} images/s "
        "(in the training step, on the training device)"
    )


def measure_view_normalization(data_dir: str, batch_size: int, batches: int, dtype: str) -> float:
    """Images/s of the `ViewNormalization` layer alone, on batches of the uint8-view pipeline."""
    config = pipeline.InputConfig(data_dir, batch_size=batch_size, dtype=dtype)
    input_pipeline = pipeline.InputPipeline(config)
    layer = input_pipeline.view_normalization()
    views = list(input_pipeline.train_dataset().take(batches).map(lambda features, _: features))
    finish = tf.function(layer)
    finish(views[0])  # trace
    start = time.perf_counter()
    for features in views:
        finish(features).numpy()
    return len(views) * batch_size / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
