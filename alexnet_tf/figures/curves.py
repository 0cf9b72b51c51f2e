"""``plot``: a run's learning curves from ``RUN/history.csv`` (one row per finished epoch).

Four panels over epochs (1 = the end of the first epoch): the loss, the top-1 and the top-5
error (``1 − accuracy``), training and validation, and the learning rate (log scale, so §5's
÷10 steps are equal drops). The training values are averages over each epoch's steps, taken
with dropout and augmentation on; the validation values are centre views at the epoch's end.
"""

from __future__ import annotations

import math

import tensorflow as tf
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from alexnet_tf import runs
from alexnet_tf.errors import InputError
from alexnet_tf.files import write_png
from alexnet_tf.runs import HISTORY, HISTORY_FIELDS

# The columns the plot reads (`alexnet_tf.runs.HISTORY_FIELDS` has them all).
COLUMNS = HISTORY_FIELDS[: HISTORY_FIELDS.index("val_top5") + 1]
FIGSIZE = (10.0, 7.0)  # inches
DPI = 100


def read_history(run: str) -> dict[str, list[float]]:
    """``{column: values by epoch}`` from ``run``'s history (a run directory or the CSV itself),
    read by `alexnet_tf.runs.read_history`; `InputError` if there is none or no finished epoch."""
    path = runs.history_path(run)
    if not tf.io.gfile.exists(path):
        raise InputError(f"{path}: no training history; pass a run directory of `alexnet-tf fit` (or its {HISTORY})")
    rows = runs.read_history(path, COLUMNS)
    if not rows:
        raise InputError(f"{path}: no finished epoch yet; plot again after the first epoch")
    return {column: [row[column] for row in rows] for column in COLUMNS}


def curves_figure(history: dict[str, list[float]], title: str = "") -> Figure:
    """The four panels of the module docstring, for a `read_history` result."""
    epochs = [epoch + 1 for epoch in history["epoch"]]
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    (loss, top1), (top5, rate) = figure.subplots(2, 2, sharex=True)
    loss.plot(epochs, history["loss"], marker=".", label="train")
    # Epochs without validation (training.validate_every_epochs) have nan: plotted without them.
    validated = [index for index, value in enumerate(history["val_loss"]) if not math.isnan(value)]
    val_epochs = [epochs[index] for index in validated]
    loss.plot(val_epochs, [history["val_loss"][index] for index in validated], marker=".", label="validation")
    loss.set_ylabel("cross-entropy loss")
    for ax, key, name in ((top1, "top1", "top-1 error"), (top5, "top5", "top-5 error")):
        ax.plot(epochs, [1.0 - v for v in history[key]], marker=".", label="train")
        ax.plot(val_epochs, [1.0 - history[f"val_{key}"][index] for index in validated], marker=".", label="validation")
        ax.set_ylabel(name)
        ax.set_ylim(0.0, 1.0)
    rate.plot(epochs, history["lr"], marker=".", color="black")
    rate.set_yscale("log")
    rate.set_ylabel("learning rate")
    for ax in (loss, top1, top5, rate):
        ax.grid(alpha=0.3)
    for ax in (top5, rate):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss.legend()
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def write_curves(run: str, output: str) -> tuple[int, int]:
    """Writes ``run``'s curves as a PNG to ``output`` (atomically); returns its (width, height)."""
    return write_png(output, curves_figure(read_history(run), title=run))
