"""Benchmark AlexNet's training step and inference on this machine.

Measures, in one run: images/s of a training step (forward, backward, SGD with momentum) and of
inference for our two-tower model, the single-tower variant and Caffe's ``Conv2D(groups=2)``
layout; and the machine's dense float32 matmul rate, so that each training step's achieved
FLOP/s can be given as a fraction of it. A training step costs about 3× the forward pass
(forward, plus gradients with respect to inputs and to weights), 2 FLOPs per multiply-add.

    python tools/bench_model.py --batch-size 32 --steps 10
"""

from __future__ import annotations

import json
import os
import time

import click
import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.network.model import AlexNet
from alexnet_tf.network.summary import summarize

# name on the command line -> (name in the table, AlexNet options)
VARIANTS = {
    "towers": ("two towers (ours)", {}),
    "one-tower": ("one tower", {"two_towers": False}),
    "grouped": ("Conv2D(groups=2)", {"grouped_convolutions": True}),
}


def _best_seconds(fn, steps: int, repeats: int = 3) -> float:
    """Best mean seconds per call over ``repeats`` blocks of ``steps`` calls (after warm-up)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def matmul_flops(n: int = 4096, steps: int = 10) -> float:
    """Dense float32 matmul FLOP/s of an n×n by n×n product."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.matmul(a, b))
    return 2 * n**3 / _best_seconds(lambda: matmul().numpy(), steps)


def bench_variant(options: dict, batch_size: int, input_size: int, steps: int, jit_compile: bool) -> dict:
    keras.utils.set_random_seed(0)
    model = AlexNet(input_size=input_size, **options)
    forward_macs = summarize(model).total.connections
    model.compile(
        optimizer=keras.optimizers.SGD(paper.LEARNING_RATE, momentum=paper.MOMENTUM),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    images = tf.random.normal((batch_size, input_size, input_size, 3), stddev=50.0)
    labels = tf.constant(np.random.default_rng(0).integers(0, paper.NUM_CLASSES, batch_size))
    train_s = _best_seconds(lambda: model.train_on_batch(images, labels), steps)
    infer = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    infer_s = _best_seconds(lambda: infer(images).numpy(), steps)
    train_ips = batch_size / train_s
    return {
        "forward_macs_per_image": forward_macs,
        "train_images_per_s": train_ips,
        "infer_images_per_s": batch_size / infer_s,
        "train_flops": train_ips * 3 * 2 * forward_macs,
    }


@click.command()
@click.option("--batch-size", default=32, show_default=True)
@click.option("--input-size", default=paper.CROP_SIZE, show_default=True)
@click.option("--steps", default=10, show_default=True, help="Timed steps per block (best of 3 blocks).")
@click.option("--variants", default=",".join(VARIANTS), show_default=True, help="Comma-separated subset.")
@click.option("--jit-compile", is_flag=True, help="Compile the steps with XLA.")
@click.option("--json", "as_json", is_flag=True)
def main(batch_size: int, input_size: int, steps: int, variants: str, jit_compile: bool, as_json: bool) -> None:
    names = variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(VARIANTS)}", param_hint="--variants")
    peak = matmul_flops()
    results = {
        VARIANTS[name][0]: bench_variant(VARIANTS[name][1], batch_size, input_size, steps, jit_compile)
        for name in names
    }
    if as_json:
        click.echo(
            json.dumps(
                {
                    "matmul_flops": peak,
                    "batch_size": batch_size,
                    "input_size": input_size,
                    "cores": os.cpu_count(),
                    "variants": results,
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"{os.cpu_count()} cores, TF {tf.__version__}, batch {batch_size}, input {input_size}; "
        f"dense fp32 matmul 4096²: {peak / 1e9:.0f} GFLOP/s"
    )
    ours = results.get("two towers (ours)")
    click.echo(
        f"{'variant':<20}{'fwd GMAC/img':>13}{'train img/s':>13}{'infer img/s':>13}"
        f"{'train GFLOP/s':>15}{'of matmul':>11}{'ours vs':>9}"
    )
    for name, r in results.items():
        ratio = f"{ours['train_images_per_s'] / r['train_images_per_s']:.2f}×" if ours else "-"
        click.echo(
            f"{name:<20}{r['forward_macs_per_image'] / 1e9:>13.3f}{r['train_images_per_s']:>13.1f}"
            f"{r['infer_images_per_s']:>13.1f}{r['train_flops'] / 1e9:>15.0f}"
            f"{r['train_flops'] / peak:>11.0%}{ratio:>9}"
        )


if __name__ == "__main__":
    main()
