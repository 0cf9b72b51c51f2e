"""Top-1 and top-5 error of trained models on prepared records, the paper's way (§4.1, Table 2).

`evaluate(EvaluateConfig)` streams one split once for all the models given (run directories or
``.keras`` files) and scores:

* each model on the centre 224×224 crop, or with ``ten_crop`` on §4.1's ten views (four corners
  and the centre, and their mirror images) with the ten softmax outputs averaged;
* their ensemble, the average of the models' (view-averaged) softmax outputs, as Table 2's
  "5 CNNs" row averages five networks' predictions.

Models are read as `fit` writes them (``RUN/best.keras``, else ``RUN/last.keras``): the model
on uint8 views, whose first layer (`ViewNormalization`) carries its dataset's mean. A model that
takes float images (a bare `AlexNet` saved from Python) gets the views finished by this dataset's
`ViewNormalization` instead. A model whose last layer is not the softmax ``predictions`` layer
(``classifier_activation=None``) has the softmax applied here.

Strategies: those of `fit` (`alexnet_tf.training.distribute`). The batch is the global batch, split over
the replicas; every replica scores its share and the shares are gathered in order, so every
worker of ``multi-worker`` ends with the whole report (only the chief writes the CSV and the
picture; workers whose share runs out first score empty batches until the others finish).
``two-tower`` places each tower of the networks on its own device (`alexnet_tf.network.model.place_towers`)
and everything else on ``fc_device``; under the other strategies a network saved with tower
placement is moved off it, so the strategy decides where it runs. ``tpu`` is not tested here.

Top-k counts an image as correct when its label is among the k classes with the highest
probability (ties broken by the lower class index, `top_k`); with fewer than k classes, top-k is
top-(number of classes).

Precision: by default every model is scored in float32 (``precision="float32"``), the
computation `alexnet-tf export` serves (`alexnet_tf.serving.serving_model.inference_parts`), so that what
evaluate reports for a mixed-precision run is what its export answers. ``precision="trained"``
scores the network in the dtype policy it was trained with (bfloat16 or float16 arithmetic for
``mixed_*`` runs), as `fit`'s validation during training computed it. For a float32 run both
are the same.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from tqdm import tqdm

from alexnet_tf.constants import EVALUATE_PRECISIONS
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.files import write_atomically, write_png
from alexnet_tf.input import bad_records
from alexnet_tf.input.bad_records import BadRecord
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.network.layers import IMAGE, ViewNormalization, network_of, with_view_normalization
from alexnet_tf.network.model import outputs_logits, place_towers, placed_devices
from alexnet_tf.records import schema
from alexnet_tf.runs import load_model
from alexnet_tf.serving.serving_model import float32_normalization
from alexnet_tf.training.distribute import (
    STRATEGIES,
    configure_devices,
    distribute_datasets,
    is_chief,
    make_strategy,
    padded_if_empty,
    tower_placement,
)

TOP_K = (1, 5)
TEN_VIEWS = 10
PRECISIONS = EVALUATE_PRECISIONS
FLOAT32 = PRECISIONS[0]
DEFAULT_BATCH_SIZE = 32  # images per batch; ten views make it 320 network inputs


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """What to evaluate and how.

    Attributes:
      data_dir: prepare-data output (local or ``gs://``).
      models: run directories or ``.keras`` files; two or more are also scored as an ensemble.
      split: the split to score (default: validation).
      ten_crop: §4.1's ten views averaged, instead of the centre crop.
      batch_size: images per batch (each is ten network inputs with ``ten_crop``).
      per_class_csv: if set, write per-class top-1 accuracy of every model (and the ensemble).
      confusion_matrix: if set, write a PNG of the row-normalised confusion matrix (the
        ensemble's, or the one model's).
      progress: show a progress bar.
      strategy: one of `alexnet_tf.training.distribute.STRATEGIES`, as for `fit`. The batch is the
        global batch.
      devices: split the CPU into this many logical devices (``mirrored`` or ``two-tower``
        without GPUs).
      fc_device: ``two-tower``: the device of everything but the towers (default: tower 0's).
      precision: ``float32`` (what the export serves) or ``trained`` (the run's own dtype
        policy, e.g. ``mixed_bfloat16``); see the module docstring.
      skip_bad_records: leave out records that cannot be read or decoded and list them in the
        report (`alexnet_tf.input.bad_records`), instead of stopping at the first.
    """

    data_dir: str
    models: tuple[str, ...]
    split: str = schema.VALIDATION
    ten_crop: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    per_class_csv: str | None = None
    confusion_matrix: str | None = None
    progress: bool = True
    strategy: str = "one-device"
    devices: int | None = None
    fc_device: str | None = None
    precision: str = FLOAT32
    skip_bad_records: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise invalid("models", self.models, "at least one run directory or .keras file")
        if self.batch_size < 1:
            raise invalid("batch_size", self.batch_size, "a positive integer")
        if self.strategy not in STRATEGIES:
            raise invalid("strategy", self.strategy, f"one of {', '.join(STRATEGIES)}")
        if self.precision not in PRECISIONS:
            raise invalid("precision", self.precision, f"one of {', '.join(PRECISIONS)}")


@dataclasses.dataclass(frozen=True)
class Scores:
    """One model's (or the ensemble's) accuracy over the split."""

    name: str
    images: int
    top1_accuracy: float
    top5_accuracy: float

    @property
    def top1_error(self) -> float:
        return 1.0 - self.top1_accuracy

    @property
    def top5_error(self) -> float:
        return 1.0 - self.top5_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "images": self.images,
            "top1_error": self.top1_error,
            "top5_error": self.top5_error,
            "top1_accuracy": self.top1_accuracy,
            "top5_accuracy": self.top5_accuracy,
        }


@dataclasses.dataclass
class EvaluationReport:
    split: str
    views: str  # "center" or "ten-crop"
    models: list[Scores]
    ensemble: Scores | None
    labels: np.ndarray  # [images] class indices, in stream order
    predictions: dict[str, np.ndarray]  # name -> [images] top-1 class, models and "ensemble"
    skipped: list[BadRecord] = dataclasses.field(default_factory=list)  # left out (skip_bad_records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "views": self.views,
            "models": [scores.to_dict() for scores in self.models],
            "ensemble": None if self.ensemble is None else self.ensemble.to_dict(),
        }

    def to_text(self) -> str:
        rows = self.models + ([self.ensemble] if self.ensemble else [])
        width = max(24, *(len(row.name) for row in rows))
        header = (
            f"{'model':<{width}} {'images':>8} {'top-1 err':>10} {'top-5 err':>10} {'top-1 acc':>10} {'top-5 acc':>10}"
        )
        lines = [f"{self.split} split, {self.views} views", header, "-" * len(header)]
        for row in rows:
            lines.append(
                f"{row.name:<{width}} {row.images:>8,} {row.top1_error:>10.2%} {row.top5_error:>10.2%} "
                f"{row.top1_accuracy:>10.2%} {row.top5_accuracy:>10.2%}"
            )
        return "\n".join(lines)


def top_k(probabilities: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]`` class indices by decreasing probability (ties: the lower class index first)."""
    k = min(k, probabilities.shape[1])
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]


def evaluate(config: EvaluateConfig) -> EvaluationReport:
    """Scores every model of ``config`` (and their ensemble) in one pass over the split."""
    if len(set(config.models)) != len(config.models):
        raise InputError(f"a model is given twice: {', '.join(config.models)}")
    configure_devices(config.devices)
    strategy = make_strategy(config.strategy)
    towers, fc_device = tower_placement(config.strategy, config.fc_device)
    with strategy.scope(), tf.device(fc_device):
        models = {path: _placed(path, load_model(path)[1], towers, config.precision) for path in config.models}
    # The views are cut at the models' input size (§4.1's 224 for the paper's network).
    sizes = {path: _image_side(path, model) for path, model in models.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{path}: {side}" for path, side in sizes.items())
        raise InputError(f"the models take different input sizes ({listed}); evaluate them separately")
    crop_size = next(iter(sizes.values()))
    pipeline = InputPipeline(
        InputConfig(
            config.data_dir,
            batch_size=config.batch_size,
            crop_size=crop_size,
            lighting_strength=0,
            skip_bad_records=config.skip_bad_records,
        )
    )
    num_classes = pipeline.metadata.num_classes
    scorers = [_Scorer(path, model, num_classes) for path, model in models.items()]
    with strategy.scope():
        normalization = pipeline.view_normalization()
    dataset = distribute_datasets(
        strategy, lambda context: pipeline.eval_dataset(config.split, ten_crop=config.ten_crop, input_context=context)
    )
    total = math.ceil(pipeline.num_records(config.split) / config.batch_size)

    views_per_image = TEN_VIEWS if config.ten_crop else 1

    def replica_outputs(views: dict[str, tf.Tensor], labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        views, images = padded_if_empty(views)
        flat = _flatten_views(views) if config.ten_crop else views
        return labels, [scorer.probabilities(flat, normalization, views_per_image)[:images] for scorer in scorers]

    @tf.function(autograph=False)
    def step(views: Any, labels: Any) -> tuple[tf.Tensor, list[tf.Tensor]]:
        # Each replica scores its share of the batch; the shares are gathered in order.
        with tf.device(fc_device):
            outputs = strategy.run(replica_outputs, args=(views, labels))
        return tf.nest.map_structure(lambda value: strategy.gather(value, axis=0), outputs)

    names = [*models, *(["ensemble"] if len(models) > 1 else [])]
    labels, correct = [], {name: {k: 0 for k in TOP_K} for name in names}
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in correct}
    with (
        tqdm(total=total, unit="batch", desc="evaluate", disable=not config.progress, dynamic_ncols=True) as bar,
        bad_records.explained(config.data_dir),
    ):
        for views, batch_labels in dataset:
            batch_labels, probabilities = step(views, batch_labels)
            batch_labels = batch_labels.numpy()
            labels.append(batch_labels)
            outputs = {scorer.name: p.numpy() for scorer, p in zip(scorers, probabilities, strict=True)}
            if len(scorers) > 1:
                outputs["ensemble"] = np.mean(list(outputs.values()), axis=0)
            for name, probabilities in outputs.items():
                ranked = top_k(probabilities, max(TOP_K))
                predictions[name].append(ranked[:, 0])
                for k in TOP_K:
                    correct[name][k] += int(np.sum(np.any(ranked[:, :k] == batch_labels[:, None], axis=1)))
            bar.update(1)
    all_labels = np.concatenate(labels) if labels else np.zeros([0], np.int64)
    if not len(all_labels):
        raise InputError(f"{config.data_dir}: the '{config.split}' split has no records to evaluate")
    scores = {
        name: Scores(name, len(all_labels), counts[1] / len(all_labels), counts[5] / len(all_labels))
        for name, counts in correct.items()
    }
    report = EvaluationReport(
        split=config.split,
        views="ten-crop" if config.ten_crop else "center",
        models=[scores[scorer.name] for scorer in scorers],
        ensemble=scores.get("ensemble"),
        labels=all_labels,
        predictions={name: np.concatenate(values) for name, values in predictions.items()},
        skipped=pipeline.skipped[config.split].records(),
    )
    if config.per_class_csv and is_chief(strategy):
        write_atomically(config.per_class_csv, per_class_csv(report, pipeline.metadata.classes).encode())
    if config.confusion_matrix and is_chief(strategy):
        write_png(config.confusion_matrix, confusion_matrix_figure(report, num_classes))
    return report


class _Scorer:
    """One model: its name in the report, and its softmax outputs for a batch of views."""

    def __init__(self, path: str, model: keras.Model, num_classes: int) -> None:
        self.name = path
        self.model = model
        self.takes_views = isinstance(model.input, dict)
        self.outputs_logits = outputs_logits(network_of(model))
        outputs = model.output.shape[-1]
        if outputs != num_classes:
            raise InputError(f"{path}: the model predicts {outputs} classes, the dataset has {num_classes}")

    def probabilities(
        self, views: dict[str, tf.Tensor], normalization: keras.layers.Layer, views_per_image: int
    ) -> tf.Tensor:
        inputs = views if self.takes_views else normalization(views)
        outputs = tf.cast(self.model(inputs, training=False), tf.float32)
        if self.outputs_logits:
            outputs = tf.nn.softmax(outputs)
        # [images · views, classes] -> the mean over each image's views.
        return tf.reduce_mean(tf.reshape(outputs, [-1, views_per_image, outputs.shape[-1]]), axis=1)


def _placed(path: str, model: keras.Model, towers: list[str] | None, precision: str = FLOAT32) -> keras.Model:
    """``model`` with its network's towers on ``towers`` (``two-tower``), or off the devices it
    was trained on (other strategies decide placement themselves); with ``precision`` float32,
    rebuilt in float32 as the export serves it (only if it computes in another dtype)."""
    network = network_of(model)
    dtype = "float32" if precision == FLOAT32 else None
    if towers is None and not placed_devices(network) and (dtype is None or _float32_throughout(model)):
        return model
    try:
        network = place_towers(network, towers, dtype=dtype)
    except InputError as error:
        raise InputError(
            f"{path}: {error}; evaluate it under another `strategy`", (*error.parameters, "strategy")
        ) from None
    if not isinstance(model.input, dict):
        return network
    normalization = next(layer for layer in model.layers if isinstance(layer, ViewNormalization))
    if dtype is not None:
        normalization = float32_normalization(normalization)
    return with_view_normalization(network, normalization)


def _float32_throughout(model: keras.Model) -> bool:
    return all(layer.compute_dtype == "float32" for layer in [*model.layers, *network_of(model).layers])


def _image_side(path: str, model: keras.Model) -> int:
    """The side of the square images ``model`` takes (on views or not)."""
    image = model.input[IMAGE] if isinstance(model.input, dict) else model.input
    height, width = image.shape[1:3]
    if height != width:
        raise InputError(f"{path}: the model takes {height}×{width} images; evaluation views are square")
    return height


def _flatten_views(views: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """``[b, 10, ...]`` views as ``[b · 10, ...]`` network inputs, image-major."""
    return {key: tf.reshape(value, [-1, *value.shape[2:]]) for key, value in views.items()}


def per_class_csv(report: EvaluationReport, classes: Sequence[Any]) -> str:
    """CSV: class index, wnid, name, images, then the top-1 accuracy of each model (and ensemble)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = list(report.predictions)
    writer.writerow(["class", "wnid", "name", "images", *(f"top1_accuracy {name}" for name in names)])
    for info in classes:
        mine = report.labels == info.index
        count = int(mine.sum())
        accuracies = [f"{np.mean(report.predictions[name][mine] == info.index):.4f}" if count else "" for name in names]
        writer.writerow([info.index, info.wnid, info.name, count, *accuracies])
    return buffer.getvalue()


def confusion_matrix_figure(report: EvaluationReport, num_classes: int) -> Figure:
    """The row-normalised confusion matrix (rows: true class, columns: predicted)."""
    name = "ensemble" if "ensemble" in report.predictions else report.models[0].name
    matrix = np.zeros([num_classes, num_classes])
    np.add.at(matrix, (report.labels, report.predictions[name]), 1)
    rows = matrix.sum(axis=1, keepdims=True)
    matrix = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    figure = Figure(figsize=(8, 7), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"{name}: {report.split}, {report.views} views (rows sum to 1)")
    figure.colorbar(image, ax=axes)
    return figure


def report_json(report: EvaluationReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
