"""Caffe's files written by hand, for the importer's tests: ``.caffemodel`` nets of AlexNet's
layers with random weights (current and legacy layouts), ``.binaryproto`` means, and
caffe-tensorflow's ``.npy`` dictionaries.

The protobuf wire format is encoded here directly from the field numbers of Caffe's
``src/caffe/proto/caffe.proto`` (BVLC/caffe), not through alexnet_tf.pretrained.caffe_proto:
the reader's schema is then checked against an independent transcription, and 61 M floats are
written in a fraction of a second (``ndarray.tobytes`` as one packed field). Fields the reader
does not declare are written too (a data layer's ``transform_param``, ``param`` learning-rate
specs, fillers, ``blobs_lr``), as Caffe's own files hold them.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

# caffe.proto field numbers used below, by message.
# BlobShape: dim = 1 (packed int64). BlobProto: num 1, channels 2, height 3, width 4, data 5
# (packed float), shape 7.
# NetParameter: name 1, layers 2 (V1LayerParameter), layer 100 (LayerParameter).
# LayerParameter: name 1, type 2, bottom 3, top 4, param 6, blobs 7, transform_param 100,
#   convolution_param 106, inner_product_param 117, lrn_param 118, pooling_param 121.
# V1LayerParameter: layer 1 (V0), bottom 2, top 3, name 4, type 5 (enum), blobs 6, blobs_lr 7,
#   convolution_param 10, inner_product_param 17, lrn_param 18, pooling_param 19,
#   transform_param 36.
# ConvolutionParameter: num_output 1, pad 3, kernel_size 4, group 5, stride 6, weight_filler 7.
# InnerProductParameter: num_output 1. LRNParameter: local_size 1, alpha 2, beta 3, k 5.
# PoolingParameter: pool 1 (MAX = 0), kernel_size 2, stride 3.
# TransformationParameter: mirror 2, crop_size 3, mean_file 4. ParamSpec: lr_mult 3.
V1_TYPES = {
    "Data": 5,
    "Convolution": 4,
    "ReLU": 18,
    "LRN": 15,
    "Pooling": 17,
    "InnerProduct": 14,
    "Dropout": 6,
    "SoftmaxWithLoss": 21,
    "Accuracy": 1,
    "Concat": 3,
}

# bvlc_alexnet's layers (train_val.prototxt): (name, type, params); conv params are
# (num_output at full width, kernel, stride, pad, group).
ALEXNET = [
    ("conv1", "Convolution", (96, 11, 4, 0, 1)),
    ("relu1", "ReLU", None),
    ("norm1", "LRN", (5, 1e-4, 0.75)),
    ("pool1", "Pooling", (3, 2)),
    ("conv2", "Convolution", (256, 5, 1, 2, 2)),
    ("relu2", "ReLU", None),
    ("norm2", "LRN", (5, 1e-4, 0.75)),
    ("pool2", "Pooling", (3, 2)),
    ("conv3", "Convolution", (384, 3, 1, 1, 1)),
    ("relu3", "ReLU", None),
    ("conv4", "Convolution", (384, 3, 1, 1, 2)),
    ("relu4", "ReLU", None),
    ("conv5", "Convolution", (256, 3, 1, 1, 2)),
    ("relu5", "ReLU", None),
    ("pool5", "Pooling", (3, 2)),
    ("fc6", "InnerProduct", 4096),
    ("relu6", "ReLU", None),
    ("drop6", "Dropout", None),
    ("fc7", "InnerProduct", 4096),
    ("relu7", "ReLU", None),
    ("drop7", "Dropout", None),
    ("fc8", "InnerProduct", None),  # num_classes
]


# --- protobuf wire format ---------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_float(number: int, value: float) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<f", value)


def field_string(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode())


def blob(array: np.ndarray, legacy: bool) -> bytes:
    """A BlobProto: ``shape`` (current) or num/channels/height/width (legacy, 4-D, padded with
    leading 1s as Caffe wrote inner products' blobs)."""
    data = field_bytes(5, np.ascontiguousarray(array, "<f4").tobytes())
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        return b"".join(field_varint(n, d) for n, d in zip((1, 2, 3, 4), dims, strict=True)) + data
    return field_bytes(7, field_bytes(1, b"".join(varint(d) for d in array.shape))) + data


# --- nets -------------------------------------------------------------------------------------


def random_weights(channel_multiplier: float = 1.0, num_classes: int = 1000, seed: int = 0) -> dict:
    """{layer: (weights, biases)} in Caffe's layout for AlexNet at ``channel_multiplier`` (the
    widths `alexnet_tf.network.model.AlexNet` gives), He-scaled so activations neither vanish nor
    explode; fc8 small, so the logits are a few units and the softmax is not saturated."""
    rng = np.random.default_rng(seed)

    def width(full: int, towers: int = 2) -> int:
        return max(1, round(full * channel_multiplier / towers)) * towers

    weights, channels = {}, 3
    for name, kind, params in ALEXNET:
        if kind == "Convolution":
            out, kernel, _, _, group = params
            shape = (width(out), channels // group, kernel, kernel)
            channels = shape[0]
        elif kind == "InnerProduct":
            fan_in = channels * 36 if name == "fc6" else channels
            channels = num_classes if params is None else width(params, 1)
            shape = (channels, fan_in)
        else:
            continue
        fan_in = int(np.prod(shape[1:]))
        scale = np.sqrt(2.0 / fan_in) * (0.05 if name == "fc8" else 1.0)
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        b = rng.normal(0.0, 0.1, shape[0]).astype(np.float32)
        weights[name] = (w, b)
    return weights


def net_bytes(
    weights: dict,
    legacy: bool = False,
    layers: list | None = None,
    extra_layer_fields: dict[str, bytes] | None = None,
) -> bytes:
    """A NetParameter holding ``weights`` in AlexNet's layers (or ``layers``, same form as
    `ALEXNET`), in the current (``layer``) or legacy (``layers``) layout, with a data layer
    before and loss and accuracy layers after, as a train_val net's snapshot has them.
    ``extra_layer_fields`` appends raw bytes to the named layers' messages."""
    entries = [("data", "Data", None), *(layers or ALEXNET), ("loss", "SoftmaxWithLoss", None)]
    entries.append(("accuracy", "Accuracy", None))
    extra = extra_layer_fields or {}
    out = [field_string(1, "AlexNet")]
    bottom = None
    for name, kind, params in entries:
        message = _layer(name, kind, params, weights, legacy, bottom) + extra.get(name, b"")
        out.append(field_bytes(2 if legacy else 100, message))
        if kind not in ("ReLU", "Dropout", "SoftmaxWithLoss", "Accuracy"):
            bottom = name
    return b"".join(out)


def _layer(name: str, kind: str, params, weights: dict, legacy: bool, bottom: str | None) -> bytes:
    if legacy:
        numbers = {"bottom": 2, "top": 3, "name": 4, "blobs": 6, "conv": 10, "ip": 17, "lrn": 18, "pool": 19}
        out = field_string(4, name) + field_varint(5, V1_TYPES[kind])
    else:
        numbers = {"bottom": 3, "top": 4, "name": 1, "blobs": 7, "conv": 106, "ip": 117, "lrn": 118, "pool": 121}
        out = field_string(1, name) + field_string(2, kind)
    if bottom is not None:
        out += field_string(numbers["bottom"], bottom)
    in_place = kind in ("ReLU", "Dropout")
    out += field_string(numbers["top"], bottom if in_place else name)
    if kind == "Data":
        transform = field_varint(2, 0) + field_varint(3, 227) + field_string(4, "imagenet_mean.binaryproto")
        out += field_bytes(36 if legacy else 100, transform)
    elif kind == "Convolution":
        num_output, kernel, stride, pad, group = params
        w, b = weights[name]
        conv = field_varint(1, w.shape[0]) + field_varint(4, kernel) + field_varint(6, stride)
        conv += (field_varint(3, pad) if pad else b"") + (field_varint(5, group) if group != 1 else b"")
        conv += field_bytes(7, field_string(1, "gaussian") + field_float(2, 0.01))  # weight_filler
        out += field_bytes(numbers["conv"], conv)
    elif kind == "InnerProduct":
        w, _ = weights[name]
        out += field_bytes(numbers["ip"], field_varint(1, w.shape[0]))
    elif kind == "LRN":
        size, alpha, beta = params
        out += field_bytes(numbers["lrn"], field_varint(1, size) + field_float(2, alpha) + field_float(3, beta))
    elif kind == "Pooling":
        kernel, stride = params
        out += field_bytes(numbers["pool"], field_varint(1, 0) + field_varint(2, kernel) + field_varint(3, stride))
    if name in weights and kind in ("Convolution", "InnerProduct"):
        for array in weights[name]:
            out += field_bytes(numbers["blobs"], blob(array, legacy))
        # Learning-rate settings Caffe keeps beside the blobs (ignored by the reader).
        out += b"".join(field_float(7, v) for v in (1.0, 2.0)) if legacy else field_bytes(6, field_float(3, 1.0))
    return out


def write_caffemodel(path: Path, weights: dict, legacy: bool = False, **options) -> Path:
    path.write_bytes(net_bytes(weights, legacy=legacy, **options))
    return path


def write_binaryproto(path: Path, mean: np.ndarray) -> Path:
    """A mean image ``[3, H, W]`` as Caffe's compute_image_mean writes it (legacy 4-D dims)."""
    path.write_bytes(blob(mean[np.newaxis], legacy=True))
    return path


def write_tensorflow_npy(path: Path, weights: dict, form: str = "list", protocol: int | None = None) -> Path:
    """caffe-tensorflow's dictionary of ``weights`` (Caffe's layout): conv (kh, kw, in, out),
    inner products (in, out) with fc6's rows in H×W×C order; ``form`` "list" ([w, b]) or
    "dict" ({"weights", "biases"}). ``protocol=2`` writes it as Python 2 era pickles did
    (GLOBAL opcodes naming ``numpy.core.multiarray``)."""
    converted = {}
    conv5_channels = weights["conv5"][0].shape[0]
    for name, (w, b) in weights.items():
        if w.ndim == 4:
            w = w.transpose(2, 3, 1, 0)
        else:
            if name == "fc6":
                side = int(np.sqrt(w.shape[1] // conv5_channels))
                w = w.reshape(w.shape[0], conv5_channels, side, side).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            w = w.T
        converted[name] = [w, b] if form == "list" else {"weights": w, "biases": b}
    array = np.empty((), dtype=object)
    array[()] = converted
    if protocol is None:
        np.save(path, array, allow_pickle=True)
        return path
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(pickle.dumps(array, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return path
