"""End-to-end training throughput of `alexnet-tf fit`'s step, measured in one run.

    python tools/bench_fit.py                        # synthesises 256×256 records in a temp dir
    python tools/bench_fit.py --data-dir D --channel-multiplier 1 --batch-size 32 --blocks 6 --rounds 2

For float32 and ``mixed_bfloat16``, and for ``one-device`` and ``two-tower`` (the towers on two
logical CPU devices), the training step of `alexnet_tf.train` (forward, backward, the paper's
SGD, synchronised every step as `fit` does) is timed on the real input pipeline over the records
and on one batch of its output held in memory (`alexnet_tf.train.measure_throughput`).

* **pipeline / in-memory** (the input pipeline's cost; aim ≥ 0.95): each model alternates between
  the two sources in blocks of ``--steps`` steps, so each pair of blocks is measured seconds
  apart; reported as the median of the paired ratios, with their range.
* **two-tower / one-device** (the placement's cost on CPU; aim ≥ 0.90) and **bfloat16 / float32**:
  different models, built in turn; rounds alternate between them so load from other processes
  hits all alike, and the ratios are of the medians over all blocks of all rounds (bfloat16 /
  float32 also with the range of the rounds' own ratios).

The first line names the host's CPU and whether it does bfloat16 natively (`alexnet_tf.precision`).
"""

from __future__ import annotations

import gc
import itertools
import os
import statistics
import tempfile

import click

from alexnet_tf import distribute, synthetic, train
from alexnet_tf.precision import host_choice
from alexnet_tf.recipe import load_recipe

PRECISIONS = ("none", "mixed_bfloat16")
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
) -> None:
    """Training images/s: real pipeline vs in-memory, float32 vs bfloat16, one device vs two towers."""
    distribute.configure_devices(2)
    click.echo(f"host: {host_choice().reason}")
    precisions, strategies = precisions or PRECISIONS, strategies or STRATEGIES
    models = list(itertools.product(precisions, strategies))
    rates: dict[tuple[str, str], dict[str, list[float]]] = {
        model: {source: [] for source in train.SOURCES} for model in models
    }
    round_medians: dict[tuple[str, str, str], list[float]] = {
        (*model, source): [] for model in models for source in train.SOURCES
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
                measured = train.measure_throughput(config, steps, warmup, blocks)
                gc.collect()  # free this model and optimizer before the next
                for source, values in measured.items():
                    rates[(precision, strategy)][source].extend(values)
                    round_medians[(precision, strategy, source)].append(statistics.median(values))
                pipeline, memory = (statistics.median(measured[source]) for source in train.SOURCES)
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
        for source in train.SOURCES:
            medians[(*model, source)] = statistics.median(measured[source])
        ratios = [a / b for a, b in zip(measured["pipeline"], measured["in-memory"], strict=True)]
        click.echo(
            f"{model[0]:15s} {model[1]:10s} {medians[(*model, 'pipeline')]:9.1f} {medians[(*model, 'in-memory')]:9.1f}"
            f"  {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
        )
    for precision, source in itertools.product(precisions, train.SOURCES):
        if len(strategies) == 2:
            ratio = medians[(precision, "two-tower", source)] / medians[(precision, "one-device", source)]
            click.echo(f"two-tower / one-device, {precision}, {source}: {ratio:.3f}")
    for strategy, source in itertools.product(strategies, train.SOURCES):
        if len(precisions) == 2:
            ratio = medians[("mixed_bfloat16", strategy, source)] / medians[("none", strategy, source)]
            bf16, fp32 = (round_medians[(name, strategy, source)] for name in ("mixed_bfloat16", "none"))
            rounds = [a / b for a, b in zip(bf16, fp32, strict=True)]
            click.echo(
                f"bfloat16 / float32, {strategy}, {source}: {ratio:.3f} (rounds {min(rounds):.3f}-{max(rounds):.3f})"
            )


if __name__ == "__main__":
    main()
