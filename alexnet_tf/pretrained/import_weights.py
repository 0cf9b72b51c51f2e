"""``alexnet-tf import-weights``: ImageNet-trained weights as a run directory of ours.

SOURCE is one of:

* Caffe's ``.caffemodel`` (the model zoo's ``bvlc_alexnet.caffemodel``, or a net of the same
  layers at another width or class count), read without Caffe (`alexnet_tf.pretrained.caffe`);
* caffe-tensorflow's ``.npy`` dictionary of the same weights (`alexnet_tf.pretrained.npy`);
* one of our ``.keras`` files or run directories (the model on views, as `fit` saves it).

A Caffe source becomes `alexnet_tf.pretrained.convert`'s network — Caffe's LRN and 227×227
unpadded input, as named options of `AlexNet` — behind a `ViewNormalization` holding Caffe's
mean (``mean``, default the per-channel BGR 104/117/123), i.e. the model on views that `fit`
saves. The run directory gets what evaluate, export, predict and show-filters read
(`alexnet_tf.runs`): ``RUN/classes.json`` (ILSVRC-2012's synsets unless ``classes`` says
otherwise, `alexnet_tf.pretrained.synsets`), then ``RUN/last.keras`` — last, so a directory
with a model is a complete import (both written atomically, `alexnet_tf.files`; a stopped import
leaves at most classes.json and a ``.tmp-`` file, and the same command run again finishes it).
Everything that can refuse the input does so before anything is written. A directory that
already holds a run (a model, checkpoints, a history or a recipe) is refused unless
``overwrite``, which clears it first (`alexnet_tf.runs.clear`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath

import tensorflow as tf

from alexnet_tf import files, runs
from alexnet_tf.classes import load_classes
from alexnet_tf.errors import InputError
from alexnet_tf.network.layers import network_of, with_view_normalization
from alexnet_tf.pretrained import caffe, convert, npy, synsets

CAFFEMODEL, NPY, KERAS = "caffemodel", "npy", "keras"
# The model zoo's bvlc_alexnet.caffemodel (BVLC/caffe models/bvlc_alexnet/readme.md).
BVLC_ALEXNET_SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What `import_weights` wrote and from what."""

    run_dir: str
    model_path: str
    source_format: str
    layout: str | None
    parameters: int
    num_classes: int
    input_size: int
    mean: str
    classes: str
    sha1: str | None = None

    def lines(self) -> list[str]:
        """The summary ``import-weights`` prints."""
        lines = [
            f"imported {self.source_format} -> {self.model_path}",
            f"  {self.parameters:,} parameters, {self.num_classes} classes ({self.classes}), "
            f"{self.input_size}x{self.input_size} input" + (f", {self.layout} layout" if self.layout else ""),
            f"  mean: {self.mean}",
        ]
        if self.sha1 is not None:
            known = " (the model zoo's bvlc_alexnet.caffemodel)" if self.sha1 == BVLC_ALEXNET_SHA1 else ""
            lines.append(f"  sha1 {self.sha1}{known}")
        return lines


def source_format(source: str) -> str:
    """`KERAS` for a run directory or ``.keras`` file, `NPY` for ``.npy``, else `CAFFEMODEL`."""
    if source.endswith(".keras") or tf.io.gfile.isdir(source):
        return KERAS
    return NPY if source.endswith(".npy") else CAFFEMODEL


def import_weights(
    source: str,
    model_dir: str,
    classes: str | None = None,
    mean: str | None = None,
    layout: str | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Writes ``model_dir`` as a run directory holding SOURCE's model (see the module docstring).

    Args:
      source: a ``.caffemodel``, a caffe-tensorflow ``.npy``, or a ``.keras`` file / run directory.
      model_dir: the run directory to write (local or ``gs://``).
      classes: the class list: ``wnid name`` lines, or a classes.json / metadata.json (or a
        directory with one). Default: ILSVRC-2012's for a Caffe source, the one beside the model
        for ours.
      mean: Caffe's mean (``.binaryproto`` or ``.npy``), Caffe sources only; default per-channel
        BGR (104, 117, 123).
      layout: ``"grouped"`` (default: Caffe's own computation) or ``"towers"``, Caffe sources only.
      overwrite: replace a run already in ``model_dir``.
    """
    _refuse_existing_run(model_dir, overwrite)
    kind = source_format(source)
    sha1 = None
    if kind == KERAS:
        for parameter, value in (("mean", mean), ("layout", layout)):
            if value is not None:
                raise InputError(
                    f"`{parameter}` applies to Caffe sources; {source} is a model of ours, imported as it is",
                    (parameter,),
                )
        path, model = runs.load_model(source)
        if not isinstance(model.input, dict):
            raise InputError(
                f"{path}: a network on float images, without its ViewNormalization (mean); import a model "
                "`alexnet-tf fit` saved (a run directory or its best.keras / last.keras)"
            )
        class_list = load_classes(classes or posixpath.dirname(path), num_classes=model.output_shape[-1])
        mean_text, classes_text = "as saved", classes or "beside the model"
    else:
        layout = layout or convert.GROUPED
        if kind == CAFFEMODEL:
            data = caffe.read_bytes(source, caffe.CAFFEMODEL_HINT)
            sha1 = hashlib.sha1(data).hexdigest()
            layers = caffe.parse_net(source, data)
        else:
            layers = npy.read_npy(source)
        caffe_mean = caffe.read_mean(mean) if mean is not None else None
        network = convert.build_network(source, layers, layout)
        if kind == CAFFEMODEL:
            convert.check_layers(source, layers, network)
        convert.set_weights(source, layers, network)
        model = with_view_normalization(network, convert.view_normalization(caffe_mean))
        class_list = synsets.read_classes(classes, network.output_shape[-1])
        mean_text = mean or "Caffe's per-channel BGR ({:g}, {:g}, {:g})".format(*convert.CAFFE_BGR_MEAN)
        classes_text = classes or "ILSVRC-2012, shipped with alexnet-tf"
    if overwrite and tf.io.gfile.exists(model_dir):
        runs.clear(model_dir)
    with files.output_errors(model_dir):
        tf.io.gfile.makedirs(model_dir)
        files.remove_temporaries(model_dir)
    runs.write_classes(model_dir, class_list)
    runs.save_model(model_dir, runs.LAST_MODEL, model)
    return ImportReport(
        run_dir=model_dir,
        model_path=posixpath.join(model_dir, runs.LAST_MODEL),
        source_format=kind,
        layout=layout,
        parameters=network_of(model).count_params(),
        num_classes=len(class_list),
        input_size=network_of(model).input_shape[1],
        mean=mean_text,
        classes=classes_text,
        sha1=sha1,
    )


def _refuse_existing_run(model_dir: str, overwrite: bool) -> None:
    """`InputError` if ``model_dir`` holds a run. A classes.json alone is an import that was
    stopped before its model was written, and is replaced."""
    if overwrite or not tf.io.gfile.isdir(model_dir):
        return
    names = [name for name in runs.RUN_FILES if name != runs.CLASSES_FILE]
    present = [name for name in names if tf.io.gfile.exists(posixpath.join(model_dir, name))]
    if present:
        raise InputError(
            f"`model_dir={model_dir!r}`: holds a run already ({', '.join(present)}); pick a new directory, "
            "or pass `overwrite=True` to replace it",
            ("model_dir", "overwrite"),
        )
