"""Fine-tuning against training from scratch, in the same wall-clock minutes, on shape photos.

    python tools/bench_finetune.py                                  # about 9 minutes
    python tools/bench_finetune.py --photos 40 --pretrain 60 --budget 30   # a quick look

Ten shape classes of generated photos (`alexnet_tf.synthetic.write_shapes_folder`, 160×128,
prepared as 128-pixel records, a fifth held out) are split in two sets of five: A (ring, cross,
bar, crescent, star) and B (diamond, disc, square, triangle, hexagon). A source run is trained
on A with the built-in ``demo`` recipe for ``--pretrain`` seconds; then three runs on B get
``--budget`` seconds of wall time each (``alexnet-tf fit`` started as a subprocess and stopped
with SIGTERM when the time is up, start-up included, as a user's would be):

* **scratch**: the ``demo`` recipe (its from-scratch settings);
* **fine-tune**: the built-in ``finetune`` recipe with ``--init-from`` the source (every layer
  trains, base rate 0.001, fc8 ×10), its model and crop keys set to the source's (the demo's);
* **fine-tune, conv5 frozen**: the same with ``--freeze conv5``.

Reported per run: epochs finished in the budget and the best held-out (validation) top-1 of an
epoch within it, from the run's history.csv; the first line names the host's CPU. Runs are
one after another, so the machine's load hits them alike only if it is steady: compare the
epochs finished too.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import click

from alexnet_tf import synthetic
from alexnet_tf.prepare.convert import PrepareConfig, prepare_dataset

# The source's architecture (the demo recipe's) as the finetune recipe's keys.
DEMO_MODEL = [
    "model.channel_multiplier=0.25",
    "model.initialization=he",
    "model.lrn_variant=paper",
    "model.pad_input=true",
    "input.crop_size=112",
]
COMMON = ["training.mixed_precision=none", "training.seed=0", "training.epochs=1000"]


@click.command()
@click.option("--photos", default=160, show_default=True, help="Training photos per class (a fifth more held out).")
@click.option("--pretrain", default=180.0, show_default=True, help="Seconds of the source run on set A.")
@click.option("--budget", default=90.0, show_default=True, help="Seconds of each run on set B.")
@click.option("--work-dir", help="Keep the photos, records and runs here (default: a temporary directory).")
def main(photos: int, pretrain: float, budget: float, work_dir: str | None) -> None:
    click.echo(f"host: {cpu_model()}")
    scratch = work_dir or tempfile.mkdtemp(prefix="bench-finetune-")
    try:
        sets = make_records(scratch, photos)
        source = os.path.join(scratch, "runs", "source")
        epochs, top1 = timed_fit(sets["A"], source, pretrain, ["--recipe", "demo", *flags(COMMON)])
        click.echo(f"source on A (demo recipe, {pretrain:g} s): {epochs} epochs, held-out top-1 {top1:.3f}")
        finetune = ["--recipe", "finetune", "--init-from", source, *flags(DEMO_MODEL + COMMON)]
        runs = {
            "scratch": ("scratch (demo recipe)", ["--recipe", "demo", *flags(COMMON)]),
            "finetune": ("fine-tune (finetune recipe)", finetune),
            "frozen": ("fine-tune, --freeze conv5", [*finetune, "--freeze", "conv5"]),
        }
        click.echo(f"\non B, {budget:g} s of wall time each:")
        click.echo(f"{'run':<30} {'epochs':>6} {'held-out top-1':>15}")
        for directory, (name, args) in runs.items():
            epochs, top1 = timed_fit(sets["B"], os.path.join(scratch, "runs", directory), budget, args)
            click.echo(f"{name:<30} {epochs:>6} {top1:>15.3f}")
    finally:
        if work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def flags(overrides: list[str]) -> list[str]:
    return [f"--set={override}" for override in overrides]


def cpu_model() -> str:
    """The host CPU's model name (lscpu), for the figures' record."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} logical CPUs"


def make_records(root: str, photos: int) -> dict[str, str]:
    """Two record sets of five shape classes each (A: the first five of `SHAPES`, B: the others)."""
    images = os.path.join(root, "images")
    per_class = photos + photos // 4
    click.echo(f"writing {10 * per_class} shape photos (160x128) and 128x128 records ...")
    synthetic.write_shapes_folder(images, classes=10, per_class=per_class, size=(160, 128))
    sets = {}
    for name, shapes in (("A", synthetic.SHAPES[:5]), ("B", synthetic.SHAPES[5:])):
        folder = os.path.join(root, f"images_{name}", "train")
        os.makedirs(folder)
        for shape in shapes:
            os.rename(os.path.join(images, "train", shape), os.path.join(folder, shape))
        sets[name] = os.path.join(root, f"records_{name}")
        prepare_dataset(
            PrepareConfig(
                os.path.dirname(folder),
                sets[name],
                image_size=128,
                val_fraction=0.2,
                train_shards=4,
                validation_shards=1,
                progress=False,
            )
        )
    return sets


def timed_fit(data_dir: str, model_dir: str, seconds: float, args: list[str]) -> tuple[int, float]:
    """Runs ``alexnet-tf fit`` for ``seconds`` of wall time (then SIGTERM: it checkpoints and
    stops); returns the epochs finished and their best held-out top-1 (0 if none finished)."""
    command = [sys.executable, "-m", "alexnet_tf", "fit", "--data-dir", data_dir, "--model-dir", model_dir, "--quiet"]
    process = subprocess.Popen(command + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
        if process.returncode not in (0, 128 + signal.SIGTERM):
            raise click.ClickException(f"fit {model_dir} failed: {stderr.strip()[-2000:]}") from None
    else:
        raise click.ClickException(f"fit {model_dir} ended early: {process.stderr.read().strip()[-2000:]}")
    history = os.path.join(model_dir, "history.csv")
    if not os.path.exists(history):
        return 0, 0.0
    with open(history) as f:
        rows = list(csv.DictReader(f))
    return len(rows), max((float(row["val_top1"]) for row in rows), default=0.0)


if __name__ == "__main__":
    main()
