"""Reading Caffe's files without Caffe: a net's weights (``.caffemodel``) and a mean image
(``.binaryproto`` or ``.npy``).

`read_net` parses a ``.caffemodel`` with the message classes of `alexnet_tf.pretrained.caffe_proto`
(current ``layer`` or legacy ``layers`` layout alike) and returns the layers that compute
something, in the file's order, as `CaffeLayer` records: Caffe's type name, the parameters
that decide what the layer computes, and the blobs as NumPy arrays in Caffe's own layout
(convolution weights ``(out, in / group, kh, kw)``, inner-product weights ``(out, in)``,
biases ``(out,)``). Layers that compute nothing at inference (data, dropout, softmax, loss,
accuracy, split) are left out. Whether the layers are AlexNet's is decided by
`alexnet_tf.pretrained.convert`, which knows our model.

`read_mean` reads Caffe's mean: the 3×256×256 BGR mean image as ``imagenet_mean.binaryproto``
(a ``BlobProto``, what Caffe's ``compute_image_mean`` writes) or ``ilsvrc_2012_mean.npy`` (the
same image as a NumPy array, shipped with pycaffe), or three per-channel BGR values in a
``.npy``.

Files are read through `tf.io.gfile` (``gs://`` works). Bad input raises `InputError` naming
the file.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from alexnet_tf.errors import InputError
from alexnet_tf.pretrained import caffe_proto

# Caffe's type names (the current layout's strings) for the legacy layout's enum values that
# an AlexNet file holds; any other legacy type keeps its enum name and is refused as not AlexNet's.
_V1_TYPE_NAMES = {
    "CONVOLUTION": "Convolution",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "POOLING": "Pooling",
    "RELU": "ReLU",
    "DROPOUT": "Dropout",
    "DATA": "Data",
    "IMAGE_DATA": "ImageData",
    "MEMORY_DATA": "MemoryData",
    "HDF5_DATA": "HDF5Data",
    "DUMMY_DATA": "DummyData",
    "WINDOW_DATA": "WindowData",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "ACCURACY": "Accuracy",
    "SPLIT": "Split",
    "SILENCE": "Silence",
}
_V1_NAMES_BY_NUMBER = {number: name for name, number in caffe_proto.V1_LAYER_TYPES.items()}

# Layers that compute nothing at inference: inputs, dropout (the identity at test time), the
# softmax and loss heads, accuracy, Caffe's automatic splits.
IGNORED_TYPES = frozenset(
    {
        "Input",
        "Data",
        "ImageData",
        "MemoryData",
        "HDF5Data",
        "DummyData",
        "WindowData",
        "Dropout",
        "Softmax",
        "SoftmaxWithLoss",
        "Accuracy",
        "Split",
        "Silence",
    }
)
CONVOLUTION, INNER_PRODUCT, LRN, POOLING, RELU = "Convolution", "InnerProduct", "LRN", "Pooling", "ReLU"
CAFFEMODEL_HINT = "Caffe's .caffemodel (e.g. bvlc_alexnet.caffemodel)"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class CaffeLayer:
    """One computing layer of a Caffe net, as `read_net` found it.

    Attributes:
      name: the layer's name in the file.
      type: Caffe's type name ("Convolution", "InnerProduct", "LRN", "Pooling", "ReLU", ...).
      params: what decides the computation: convolutions ``kernel``, ``stride``, ``pad``,
        ``dilation`` (each (h, w)), ``group``; LRN ``local_size``, ``alpha``, ``beta``, ``k``,
        ``norm_region``; pooling ``pool``, ``kernel``, ``stride``, ``pad``, ``global_pooling``.
      blobs: weights and biases in Caffe's layout, float32 (inner-product weights as
        ``(out, in)`` also when the file stores them transposed).
    """

    name: str
    type: str
    params: dict[str, Any]
    blobs: tuple[np.ndarray, ...]


def read_bytes(path: str, what: str) -> bytes:
    """The bytes of ``path`` (`InputError` naming it as ``what`` if it cannot be read)."""
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise InputError(f"{path}: no such file; pass {what}")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.OpError as error:
        raise InputError(f"{path}: cannot read it ({error.message}); pass {what}") from None


def read_net(path: str) -> list[CaffeLayer]:
    """The computing layers of the ``.caffemodel`` at ``path``, in the file's order (`parse_net`)."""
    return parse_net(path, read_bytes(path, CAFFEMODEL_HINT))


def parse_net(path: str, data: bytes) -> list[CaffeLayer]:
    """The computing layers of ``data``, the content of the ``.caffemodel`` at ``path``.

    Raises `InputError` when it is not a binary Caffe net (unparseable, a text ``.prototxt``,
    an HDF5 snapshot, no layer with weights), uses the pre-2014 V0 layout, or holds a blob whose values do not
    fill its shape.
    """
    if data.startswith(_HDF5_SIGNATURE):
        raise InputError(
            f"{path}: an HDF5 snapshot (Caffe's snapshot_format: HDF5), not the binary protobuf this reads; "
            "save the net as a .caffemodel (pycaffe: net.save(path))"
        )
    if _looks_like_text(data):
        raise InputError(
            f"{path}: a text file (a .prototxt holds the net's definition, not its weights); "
            "pass the binary .caffemodel"
        )
    net = caffe_proto.NetParameter()
    try:
        net.ParseFromString(data)
    except DecodeError as error:
        raise InputError(
            f"{path}: not a Caffe net ({error}); pass a .caffemodel, e.g. bvlc_alexnet.caffemodel"
        ) from None
    if any(layer.HasField("layer") for layer in net.layers):
        raise InputError(
            f"{path}: a Caffe net in the V0 layout (before 2014); convert it with Caffe's "
            "upgrade_net_proto_binary, then import the result"
        )
    entries = [(layer.name, _type_name(layer), layer) for layer in [*net.layers, *net.layer]]
    if not any(blob_layer.blobs for _, _, blob_layer in entries):
        raise InputError(
            f"{path}: not a Caffe net with weights (no layer holds any); pass a .caffemodel "
            "(a mean image .binaryproto goes to `mean`)",
            ("mean",),
        )
    return [_layer(path, name, kind, layer) for name, kind, layer in entries if kind not in IGNORED_TYPES]


def read_mean(path: str) -> np.ndarray:
    """Caffe's mean from ``path``: ``[3, H, W]`` (the mean image) or ``[3]`` (per channel),
    float32, channels in Caffe's BGR order, 0–255 scale.

    ``.binaryproto``: a ``BlobProto`` (num 1, channels 3); ``.npy``: ``[3, H, W]``,
    ``[1, 3, H, W]`` or ``[3]`` (a plain array; pickles are refused).
    """
    what = "`mean`: imagenet_mean.binaryproto or ilsvrc_2012_mean.npy"
    data = read_bytes(path, what)
    if path.endswith(".npy"):
        try:
            mean = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise InputError(f"{path}: not a NumPy array ({error}); pass {what}") from None
    else:
        blob = caffe_proto.BlobProto()
        try:
            blob.ParseFromString(data)
        except DecodeError as error:
            raise InputError(f"{path}: not a Caffe BlobProto ({error}); pass {what}") from None
        mean = blob_array(path, "the mean", blob)
    mean = np.asarray(mean, np.float32)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.shape != (3,) and (mean.ndim != 3 or mean.shape[0] != 3):
        raise InputError(f"{path}: a mean of shape {mean.shape}; expected BGR [3, height, width] or [3]")
    if not np.all(np.isfinite(mean)):
        raise InputError(f"{path}: the mean holds values that are not finite numbers")
    return mean


def blob_array(path: str, where: str, blob: Any, rank: int | None = None) -> np.ndarray:
    """A ``BlobProto``'s values as a float32 array of its shape: ``shape.dim`` or, in files
    of the legacy layout, ``(num, channels, height, width)`` with leading 1s dropped down to
    ``rank`` (Caffe stored an inner product's weights as ``(1, 1, out, in)``)."""
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
        while rank is not None and len(shape) > rank and shape[0] == 1:
            shape = shape[1:]
    if math.prod(shape) != values.size or values.size == 0:
        raise InputError(f"{path}: {where} holds {values.size} values for a blob of shape {shape}; the file is damaged")
    return values.reshape(shape)


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text.strip()) and all(c.isprintable() or c.isspace() for c in text)


def _type_name(layer: Any) -> str:
    if isinstance(layer.type, str):
        return layer.type
    enum_name = _V1_NAMES_BY_NUMBER.get(layer.type, str(layer.type))
    return _V1_TYPE_NAMES.get(enum_name, enum_name)


def _layer(path: str, name: str, kind: str, layer: Any) -> CaffeLayer:
    ranks = {CONVOLUTION: (4, 1), INNER_PRODUCT: (2, 1)}.get(kind, ())
    blobs = [
        blob_array(path, f"layer {name!r} blob {i}", blob, ranks[i] if i < len(ranks) else None)
        for i, blob in enumerate(layer.blobs)
    ]
    params: dict[str, Any] = {}
    if kind == CONVOLUTION:
        p = layer.convolution_param
        params = {
            "kernel": _pair(p.kernel_size, p.kernel_h if p.HasField("kernel_h") else None, p.kernel_w, 0),
            "stride": _pair(p.stride, p.stride_h if p.HasField("stride_h") else None, p.stride_w, 1),
            "pad": _pair(p.pad, p.pad_h if p.HasField("pad_h") or p.HasField("pad_w") else None, p.pad_w, 0),
            "dilation": _pair(p.dilation, None, None, 1),
            "group": p.group,
        }
    elif kind == INNER_PRODUCT and layer.inner_product_param.transpose and blobs:
        blobs[0] = blobs[0].T  # stored (in, out); Caffe's usual layout is (out, in)
    elif kind == LRN:
        p = layer.lrn_param
        region = type(p).DESCRIPTOR.fields_by_name["norm_region"].enum_type.values_by_number[p.norm_region].name
        params = {"local_size": p.local_size, "alpha": p.alpha, "beta": p.beta, "k": p.k, "norm_region": region}
    elif kind == POOLING:
        p = layer.pooling_param
        method = type(p).DESCRIPTOR.fields_by_name["pool"].enum_type.values_by_number[p.pool].name
        params = {
            "pool": method,
            "kernel": (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size, p.kernel_size),
            "stride": (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride, p.stride),
            "pad": (p.pad_h, p.pad_w) if p.HasField("pad_h") or p.HasField("pad_w") else (p.pad, p.pad),
            "global_pooling": p.global_pooling,
        }
    return CaffeLayer(name=name, type=kind, params=params, blobs=tuple(blobs))


def _pair(values: Any, height: int | None, width: int, default: int) -> tuple[int, int]:
    """A convolution's (h, w) setting: ``*_h``/``*_w`` if given, else the repeated field (one
    value for both, or one per dimension), else Caffe's default."""
    if height is not None:
        return int(height), int(width)
    values = list(values)
    if not values:
        return default, default
    return (int(values[0]), int(values[-1])) if len(values) <= 2 else tuple(values)
