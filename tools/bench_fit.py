"""End-to-end training throughput of `alexnet-tf fit`'s step, measured in one run.

    python tools/bench_fit.py                        # synthesises 256×256 records in a temp dir
    python tools/bench_fit.py --data-dir D --channel-multiplier 1 --batch-size 32 --blocks 6 --rounds 2

For float32 and ``mixed_bfloat16``, and for ``one-device`` and ``two-tower`` (the towers on two
logical CPU devices), fit's training step (`alexnet_tf.training.trainer.Trainer.train_step`:
forward, backward, the paper's SGD, synchronised every step as `fit` does) is timed on the real
input pipeline over the records and on one batch of its output held in memory
(`measure_throughput`, through the Trainer's public surface only).

* **pipeline / in-memory** (the input pipeline's cost; aim ≥ 0.95): each model alternates between
  the two sources in blocks of ``--steps`` steps, so each pair of blocks is measured seconds
  apart; reported as the median of the paired ratios, with their range.
* **two-tower / one-device** (the placement's cost on CPU; aim ≥ 0.90) and **bfloat16 / float32**:
  different models, built in turn; rounds alternate between them so load from other processes
  hits all alike, and the ratios are of the medians over all blocks of all rounds (bfloat16 /
  float32 also with the range of the rounds' own ratios).

``--loop EPOCHS`` measures the loop around the steps instead: a real `fit` of the built-in
``demo`` recipe (float32) on a generated folder of shape photos (``--photos`` per class, five
classes, 128-pixel records, as users' own folders are), reporting fit's wall time against the
time its steps took (images trained / training images/s), with where the rest went. With
``--demo`` it is `alexnet-tf demo` as shipped instead (its ten shape classes, its precision,
then its two evaluations), whose fit is the figure issue 18 §6 sets the goal on:
``python tools/bench_fit.py --loop 40 --demo``.

The first line names the host's CPU and whether it does bfloat16 natively (`alexnet_tf.training.precision`).
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import statistics
import tempfile
import time

import click

from alexnet_tf import synthetic
from alexnet_tf.demo import DemoConfig, run_demo
from alexnet_tf.prepare.convert import PrepareConfig, prepare_dataset
from alexnet_tf.recipe import load_recipe
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import DatasetMetadata
from alexnet_tf.training import fit as train
from alexnet_tf.training.distribute import configure_devices, distribute_datasets, make_strategy
from alexnet_tf.training.precision import host_choice
from alexnet_tf.training.timings import STEPS, VALIDATION
from alexnet_tf.training.trainer import Trainer

PRECISIONS = ("none", "mixed_bfloat16")
SOURCES = ("pipeline", "in-memory")
STRATEGIES = ("one-device", "two-tower")


@click.command()
@click.option("--data-dir", help="prepare-data output (default: synthetic records in a temp dir).")
@click.option("--records", default=512, show_default=True, help="Synthetic training records to write.")
@click.option("--channel-multiplier", default=1.0, show_default=True, help="model.channel_multiplier.")
@click.option("--batch-size", default=32, show_default=True, help="Global batch.")
@click.option("--steps", default=5, show_default=True, help="Timed steps per block.")
@click.option("--blocks", default=6, show_default=True, help="Pairs of blocks (pipeline, in-memory) per model.")
@click.option("--warmup", default=3, show_default=True, help="Untimed steps per source before the blocks.")
@click.option("--rounds", default=2, show_default=True, help="Rounds over all models.")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(PRECISIONS), help="Default: both.")
@click.option("--strategy", "strategies", multiple=True, type=click.Choice(STRATEGIES), help="Default: both.")
@click.option("--loop", "loop_epochs", type=int, help="Measure fit's loop instead: EPOCHS of the demo recipe.")
@click.option("--photos", default=120, show_default=True, help="--loop: training photos per class (5 classes).")
@click.option("--demo", is_flag=True, help="--loop: run `alexnet-tf demo` as shipped (its data, precision) instead.")
def main(
    data_dir: str | None,
    records: int,
    channel_multiplier: float,
    batch_size: int,
    steps: int,
    blocks: int,
    warmup: int,
    rounds: int,
    precisions: tuple[str, ...],
    strategies: tuple[str, ...],
    loop_epochs: int | None,
    photos: int,
    demo: bool,
) -> None:
    """Training images/s: real pipeline vs in-memory, float32 vs bfloat16, one device vs two towers."""
    configure_devices(2)
    click.echo(f"host: {host_choice().reason}")
    if loop_epochs is not None:
        measure_loop(loop_epochs, photos, demo)
        return
    precisions, strategies = precisions or PRECISIONS, strategies or STRATEGIES
    models = list(itertools.product(precisions, strategies))
    rates: dict[tuple[str, str], dict[str, list[float]]] = {
        model: {source: [] for source in SOURCES} for model in models
    }
    round_medians: dict[tuple[str, str, str], list[float]] = {
        (*model, source): [] for model in models for source in SOURCES
    }
    with tempfile.TemporaryDirectory() as scratch:
        if data_dir is None:
            data_dir = os.path.join(scratch, "records")
            click.echo(f"writing {records} synthetic 256x256 records ...")
            synthetic.write_synthetic_dataset(data_dir, num_classes=10, train_records=records, train_shards=16)
        for round_index in range(rounds):
            for precision, strategy in models:
                recipe = load_recipe(
                    None,
                    [
                        f"model.channel_multiplier={channel_multiplier}",
                        f"training.batch_size={batch_size}",
                        f"training.mixed_precision={precision}",
                        "input.shuffle_buffer=256",
                        "training.seed=0",
                    ],
                )
                model_dir = os.path.join(scratch, f"run-{round_index}-{precision}-{strategy}")
                config = train.FitConfig(data_dir, model_dir, recipe, strategy=strategy, devices=2, verbose=False)
                measured = measure_throughput(config, steps, warmup, blocks)
                gc.collect()  # free this model and optimizer before the next
                for source, values in measured.items():
                    rates[(precision, strategy)][source].extend(values)
                    round_medians[(precision, strategy, source)].append(statistics.median(values))
                pipeline, memory = (statistics.median(measured[source]) for source in SOURCES)
                click.echo(
                    f"round {round_index + 1}: {precision:15s} {strategy:10s} pipeline {pipeline:7.1f} "
                    f"in-memory {memory:7.1f} img/s"
                )

    click.echo(
        f"\n{rounds} round(s) of {blocks} block pairs of {steps} steps, multiplier {channel_multiplier}, "
        f"batch {batch_size}; images/s are medians over blocks"
    )
    click.echo(f"{'precision':15s} {'strategy':10s} {'pipeline':>9s} {'in-memory':>9s}  pipeline / in-memory (range)")
    medians: dict[tuple[str, str, str], float] = {}
    for model in models:
        measured = rates[model]
        for source in SOURCES:
            medians[(*model, source)] = statistics.median(measured[source])
        ratios = [a / b for a, b in zip(measured["pipeline"], measured["in-memory"], strict=True)]
        click.echo(
            f"{model[0]:15s} {model[1]:10s} {medians[(*model, 'pipeline')]:9.1f} {medians[(*model, 'in-memory')]:9.1f}"
            f"  {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
        )
    for precision, source in itertools.product(precisions, SOURCES):
        if len(strategies) == 2:
            ratio = medians[(precision, "two-tower", source)] / medians[(precision, "one-device", source)]
            click.echo(f"two-tower / one-device, {precision}, {source}: {ratio:.3f}")
    for strategy, source in itertools.product(strategies, SOURCES):
        if len(precisions) == 2:
            ratio = medians[("mixed_bfloat16", strategy, source)] / medians[("none", strategy, source)]
            bf16, fp32 = (round_medians[(name, strategy, source)] for name in ("mixed_bfloat16", "none"))
            rounds = [a / b for a, b in zip(bf16, fp32, strict=True)]
            click.echo(
                f"bfloat16 / float32, {strategy}, {source}: {ratio:.3f} (rounds {min(rounds):.3f}-{max(rounds):.3f})"
            )


def measure_throughput(config: train.FitConfig, steps: int, warmup: int, blocks: int) -> dict[str, list[float]]:
    """Training images per second of fit's step on ``config``, fed by each of `SOURCES`:
    ``{source: [images/s of each block]}``.

    ``pipeline`` is the real input pipeline over the records; ``in-memory`` is the same step fed
    one batch of that pipeline's output cached in memory and repeated (no reading, decoding or
    augmentation), the rate the pipeline is compared with. One model and one step alternate
    between the two in ``blocks`` pairs of ``steps`` timed steps, each block after one untimed
    step on its source, so that the two rates of a pair are measured seconds apart on the same
    machine state. Writes nothing.
    """
    strategy = make_strategy(config.strategy)
    train.check_combination(config, strategy)
    pipeline = train.input_pipeline(config)
    trainer = Trainer(config.recipe, strategy, pipeline, config.strategy)
    with train.recipe_precision(config.recipe):
        trainer.build()
        cached = distribute_datasets(strategy, lambda context: pipeline.train_dataset(context).take(1).cache().repeat())
        iterators = {"pipeline": iter(trainer.train_data(epoch=0)), "in-memory": iter(cached)}
        for iterator in iterators.values():
            for _ in range(warmup):
                float(trainer.train_step(iterator)[0])
        rates: dict[str, list[float]] = {source: [] for source in SOURCES}
        for _ in range(blocks):
            for source in SOURCES:
                iterator = iterators[source]
                float(trainer.train_step(iterator)[0])  # the switch: refills of the other source's buffers
                start = time.perf_counter()
                for _ in range(steps):
                    float(trainer.train_step(iterator)[0])  # synchronise every step, as fit does
                rates[source].append(steps * config.recipe.training.batch_size / (time.perf_counter() - start))
        return rates


def measure_loop(epochs: int, photos: int, demo: bool) -> None:
    """fit's wall time against its steps' time, on the demo recipe: over generated photos (five
    classes of ``photos``, float32), or with ``demo`` what `alexnet-tf demo` runs as shipped."""
    overrides = [f"training.epochs={epochs}"] + ([] if demo else ["training.mixed_precision=none"])
    recipe = load_recipe("demo", overrides)
    with tempfile.TemporaryDirectory() as scratch:
        if demo:
            click.echo(f"alexnet-tf demo: its shapes and recipe as shipped, {epochs} epochs ...")
            report = run_demo(DemoConfig(scratch, overrides=overrides, progress=False))
            result, held_out = report.fit, report.validation_images
        else:
            images, records = os.path.join(scratch, "images"), os.path.join(scratch, "records")
            per_class = photos + photos // 4  # a fifth held out for validation
            click.echo(f"writing {5 * per_class} shape photos and 128x128 records ...")
            synthetic.write_shapes_folder(images, classes=5, per_class=per_class, size=(160, 128))
            prepare_dataset(
                PrepareConfig(
                    images,
                    records,
                    image_size=128,
                    val_fraction=0.2,
                    train_shards=8,
                    validation_shards=2,
                    progress=False,
                )
            )
            held_out = DatasetMetadata.load(records).splits[schema.VALIDATION].num_records
            run = os.path.join(scratch, "run")
            result = train.fit(train.FitConfig(records, run, recipe, verbose=False))
    images_trained = result.steps * recipe.training.batch_size  # a fresh run: every step
    passes = sum(not math.isnan(row["val_top1"]) for row in result.history)  # training.validate_every_epochs
    validated = passes * held_out
    steps_seconds, validation_seconds = result.timings.seconds[STEPS], result.timings.seconds[VALIDATION]
    wall = result.timings.wall()
    click.echo(
        f"\n{epochs} epochs of the demo recipe, {images_trained} images trained, {validated} validated "
        f"({passes} {'pass' if passes == 1 else 'passes'})"
    )
    click.echo(result.timings.describe())
    click.echo(
        f"training rate {images_trained / steps_seconds:.1f} images/s; wall time / (images / rate) = "
        f"{wall / steps_seconds:.2f} (goal <= 1.10)"
    )
    # Validation is a forward pass over the held-out views: work asked for, whose share is
    # (held-out / trained) x (training rate / validation rate) per pass, not a cost of the loop.
    click.echo(
        f"validation {validated / validation_seconds:.1f} images/s ({validation_seconds / steps_seconds:.0%} of the "
        f"steps' time); the loop's own costs: (wall time - validation) / steps = "
        f"{(wall - validation_seconds) / steps_seconds:.2f}"
    )


if __name__ == "__main__":
    main()
