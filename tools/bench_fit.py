"""End-to-end training throughput of `alexnet-tf fit`'s step, measured in one run.

    python tools/bench_fit.py                        # synthesises 256×256 records in a temp dir
    python tools/bench_fit.py --data-dir D --channel-multiplier 1 --batch-size 32 --steps 20 --rounds 3

For float32 and ``mixed_bfloat16``, and for ``one-device`` and ``two-tower`` (the towers on two
logical CPU devices), the training step of `alexnet_tf.train` (forward, backward, the paper's
SGD, synchronised every step as `fit` does) is timed

* on the real input pipeline over the records (``pipeline``), and
* on one batch of the same pipeline's output cached in memory and repeated (``in-memory``),

and the ratios reported: pipeline / in-memory (the input pipeline's cost; aim ≥ 0.95) and
two-tower / one-device (the placement's cost on CPU; aim ≥ 0.90), bfloat16 / float32.

Rounds alternate between the configurations so load from other processes hits all alike; the
best round of each is reported. The CPU is split into two logical devices for the whole run
(one-device uses the first; both share the process's thread pools).
"""

from __future__ import annotations

import gc
import itertools
import os
import tempfile

import click

from alexnet_tf import distribute, synthetic, train
from alexnet_tf.recipe import load_recipe

PRECISIONS = ("none", "mixed_bfloat16")
STRATEGIES = ("one-device", "two-tower")
SOURCES = ("pipeline", "in-memory")


@click.command()
@click.option("--data-dir", help="prepare-data output (default: synthetic records in a temp dir).")
@click.option("--records", default=512, show_default=True, help="Synthetic training records to write.")
@click.option("--channel-multiplier", default=1.0, show_default=True, help="model.channel_multiplier.")
@click.option("--batch-size", default=32, show_default=True, help="Global batch.")
@click.option("--steps", default=10, show_default=True, help="Timed steps per round.")
@click.option("--warmup", default=3, show_default=True, help="Untimed steps before each timing.")
@click.option("--rounds", default=2, show_default=True, help="Rounds over all configurations (best kept).")
def main(
    data_dir: str | None, records: int, channel_multiplier: float, batch_size: int, steps: int, warmup: int, rounds: int
) -> None:
    """Training images/s: real pipeline vs in-memory, float32 vs bfloat16, one device vs two towers."""
    distribute.configure_devices(2)
    with tempfile.TemporaryDirectory() as scratch:
        if data_dir is None:
            data_dir = os.path.join(scratch, "records")
            click.echo(f"writing {records} synthetic 256x256 records ...")
            synthetic.write_synthetic_dataset(data_dir, num_classes=10, train_records=records, train_shards=16)
        best: dict[tuple[str, str, str], float] = {}
        for round_index in range(rounds):
            for precision, strategy, source in itertools.product(PRECISIONS, STRATEGIES, SOURCES):
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
                model_dir = os.path.join(scratch, f"run-{round_index}-{precision}-{strategy}-{source}")
                config = train.FitConfig(data_dir, model_dir, recipe, strategy=strategy, devices=2, verbose=False)
                rate = train.measure_throughput(config, steps, warmup, in_memory=source == "in-memory")
                gc.collect()  # free this configuration's model and optimizer before the next
                key = (precision, strategy, source)
                best[key] = max(best.get(key, 0.0), rate)
                click.echo(f"round {round_index + 1}: {precision:15s} {strategy:10s} {source:9s} {rate:8.1f} img/s")
    click.echo(
        f"\nbest of {rounds} rounds, multiplier {channel_multiplier}, batch {batch_size}, {steps} steps (images/s):"
    )
    click.echo(f"{'precision':15s} {'strategy':10s} {'pipeline':>9s} {'in-memory':>9s} {'ratio':>6s}")
    for precision, strategy in itertools.product(PRECISIONS, STRATEGIES):
        real, memory = best[(precision, strategy, "pipeline")], best[(precision, strategy, "in-memory")]
        click.echo(f"{precision:15s} {strategy:10s} {real:9.1f} {memory:9.1f} {real / memory:6.2f}")
    for precision in PRECISIONS:
        for source in SOURCES:
            ratio = best[(precision, "two-tower", source)] / best[(precision, "one-device", source)]
            click.echo(f"two-tower / one-device, {precision}, {source}: {ratio:.2f}")
    for strategy in STRATEGIES:
        ratio = best[("mixed_bfloat16", strategy, "pipeline")] / best[("none", strategy, "pipeline")]
        click.echo(f"bfloat16 / float32, {strategy}, pipeline: {ratio:.2f}")


if __name__ == "__main__":
    main()
