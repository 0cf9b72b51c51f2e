"""``alexnet-tf demo``: the whole path on a laptop, in a few minutes, with nothing to download.

`run_demo` chains the real commands, each resumable, in one working directory:

1. ``images/``: folder-per-class images. By default `alexnet_tf.synthetic.write_shapes_folder`
   draws them: ten shape classes (disc, square, triangle, …), each object at a random position,
   scale, rotation and colour over a cluttered random background, so the network must find the
   object and cannot go by colour. They are synthetic, not photographs. With ``data`` the
   user's own folder is used instead (``CLASS/*.jpg`` or ``train/CLASS/*.jpg``).
2. ``records/``: ``prepare-data`` at `DEMO_IMAGE_SIZE`² (a named deviation from §2's 256, for
   speed), with a fifth of each class held out for validation unless the folder has ``val/``.
3. ``run/``: ``fit`` with the built-in ``demo`` recipe (``pipelines/demo.yaml``: a quarter-width
   AlexNet, He initialisation, a step schedule, ``mixed_precision: auto``; each deviation is
   explained in the file).
4. ``evaluate`` on the held-out images: centre crop and §4.1's ten views.

Re-running the command continues where an interrupted run stopped (each step resumes or finds
its output complete).
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Sequence

import tensorflow as tf

from alexnet_tf import synthetic
from alexnet_tf.evaluate import EvaluateConfig, EvaluationReport, evaluate
from alexnet_tf.files import output_errors
from alexnet_tf.prepare.convert import PrepareConfig, prepare_dataset
from alexnet_tf.recipe import load_recipe
from alexnet_tf.runs import next_steps
from alexnet_tf.training.fit import FitConfig, FitResult, fit

DEMO_IMAGE_SIZE = 128  # stored side; the demo recipe's crops are 112×112
DEMO_CLASSES = 10
DEMO_PER_CLASS = 160  # 1,600 images: 1,280 to train, 320 held out
DEMO_VAL_FRACTION = 0.2
DEMO_RECIPE = "demo"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Where the demo works and what it trains on.

    Attributes:
      workdir: the directory for ``images/``, ``records/`` and ``run/``.
      data: a folder-per-class image set to use instead of the synthetic shapes.
      classes, per_class: the synthetic set's size (ignored with ``data``).
      overrides: ``section.key=value`` changes to the demo recipe (as ``fit --set``).
      progress: progress bars and per-epoch lines.
    """

    workdir: str = "alexnet-tf-demo"
    data: str | None = None
    classes: int = DEMO_CLASSES
    per_class: int = DEMO_PER_CLASS
    overrides: Sequence[str] = ()
    progress: bool = True


@dataclasses.dataclass
class DemoReport:
    config: DemoConfig
    images: str
    records: str
    run: str
    num_classes: int
    train_images: int
    validation_images: int
    fit: FitResult
    center: EvaluationReport
    ten_crop: EvaluationReport

    def summary(self) -> str:
        chance = 1.0 / self.num_classes
        center, ten = self.center.models[0], self.ten_crop.models[0]
        source = self.config.data or f"{self.images} (synthetic shapes, drawn by alexnet-tf)"
        return "\n".join(
            [
                "",
                f"alexnet-tf demo: {self.num_classes} classes, {self.train_images:,} training and "
                f"{self.validation_images:,} held-out images from {source}",
                f"  trained {self.fit.epochs} epochs ({self.fit.steps} steps) with the 'demo' recipe",
                f"  held-out top-1 accuracy: {center.top1_accuracy:.1%} centre crop, {ten.top1_accuracy:.1%} "
                f"ten views (chance: {chance:.1%}); top-5: {center.top5_accuracy:.1%} / {ten.top5_accuracy:.1%}",
                "",
                f"  records          {self.records}",
                f"  run directory    {self.run} (best.keras, last.keras, history.csv, checkpoints/)",
                f"  TensorBoard      tensorboard --logdir {posixpath.join(self.run, 'tensorboard')}",
                "",
                *next_steps(self.records, self.run, posixpath.join(self.config.workdir, "export")),
                f"  alexnet-tf show-augment --data-dir {self.records} -o augment.png",
            ]
        )


def run_demo(config: DemoConfig) -> DemoReport:
    """Runs (or resumes) the demo's four steps; see the module docstring."""
    images = config.data or posixpath.join(config.workdir, "images")
    records = posixpath.join(config.workdir, "records")
    run = posixpath.join(config.workdir, "run")
    if config.data is None:
        _write_shapes(images, config.classes, config.per_class)
    has_validation = tf.io.gfile.isdir(posixpath.join(images, "val"))
    prepared = prepare_dataset(
        PrepareConfig(
            source=images,
            output=records,
            train_shards=8,
            validation_shards=2,
            val_fraction=0.0 if has_validation else DEMO_VAL_FRACTION,
            image_size=DEMO_IMAGE_SIZE,
            progress=config.progress,
        )
    )
    recipe = load_recipe(DEMO_RECIPE, config.overrides)
    trained = fit(FitConfig(records, run, recipe, verbose=config.progress))
    scores = {
        ten_crop: evaluate(EvaluateConfig(records, (run,), ten_crop=ten_crop, progress=config.progress))
        for ten_crop in (False, True)
    }
    splits = prepared.metadata.splits
    return DemoReport(
        config=config,
        images=images,
        records=records,
        run=run,
        num_classes=prepared.metadata.num_classes,
        train_images=splits["train"].num_records,
        validation_images=splits["validation"].num_records,
        fit=trained,
        center=scores[False],
        ten_crop=scores[True],
    )


def _write_shapes(folder: str, classes: int, per_class: int) -> None:
    """Draws the synthetic classes once; an existing complete folder is kept (a resumed demo)."""
    marker = posixpath.join(folder, ".complete")
    if tf.io.gfile.exists(marker):
        return
    with output_errors(folder):
        if tf.io.gfile.exists(folder):
            tf.io.gfile.rmtree(folder)  # an interrupted drawing: start it again
        synthetic.write_shapes_folder(folder, classes=classes, per_class=per_class, size=(160, 136))
        with tf.io.gfile.GFile(marker, "w") as f:
            f.write(f"{classes} classes x {per_class} images\n")
