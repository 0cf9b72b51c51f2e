"""Reading the NumPy dictionary that caffe-tensorflow writes from a Caffe net (``bvlc_alexnet.npy``).

caffe-tensorflow (ethereon/caffe-tensorflow) converts a ``.caffemodel`` into a ``.npy`` file
holding one pickled dictionary, ``{layer name: params}``, the file the popular TensorFlow
AlexNet fine-tuning repositories load. Two forms of ``params`` exist: ``[weights, biases]``
(its early releases, and the widely shared ``bvlc_alexnet.npy``) and
``{"weights": ..., "biases": ...}`` (later releases). The arrays are in TensorFlow's layout:
convolution kernels ``(kh, kw, in / group, out)``, inner-product weights ``(in, out)`` with
fc6's rows already in pool5's H×W×C order; the input is still Caffe's BGR, 0–255, minus the
mean. `read_npy` turns them back into Caffe's layout (`alexnet_tf.pretrained.caffe.CaffeLayer`),
so one converter serves both sources.

The dictionary is a pickle, and unpickling can run code, so it is read with an unpickler that
admits only NumPy arrays and dtypes (and the byte-string codec of Python 2 era pickles): any
other object is refused, and nothing in the file is executed. Python 2 pickles (the shared
``bvlc_alexnet.npy`` is one) are read with ``encoding="latin1"``, as NumPy documents.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

from alexnet_tf.errors import InputError
from alexnet_tf.pretrained.caffe import CONVOLUTION, INNER_PRODUCT, CaffeLayer, read_bytes

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")

# The only globals a pickled dictionary of arrays needs: NumPy's array reconstructor (under its
# NumPy 1 and NumPy 2 module names), ndarray, dtype, and the codec Python 3 uses for bytes in
# protocol-2 pickles.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a dictionary of arrays does not")
        return _ALLOWED[module, name]


def read_npy(path: str) -> list[CaffeLayer]:
    """conv1…conv5 and fc6…fc8 of caffe-tensorflow's dictionary at ``path``, in Caffe's layout.

    Raises `InputError` when the file is not a NumPy file holding such a dictionary (a plain
    array, another pickled object, a layer missing, params that are neither form, or shapes
    that do not fit together).
    """
    what = "caffe-tensorflow's .npy dictionary (e.g. bvlc_alexnet.npy)"
    dictionary = _load_dictionary(path, read_bytes(path, what), what)
    layers = {}
    for name in (*CONV_LAYERS, *FC_LAYERS):
        if name not in dictionary:
            listed = ", ".join(sorted(dictionary)) or "none"
            raise InputError(f"{path}: no layer {name!r} (layers: {listed}); pass {what}")
        layers[name] = _weights_and_biases(path, name, dictionary[name])
    converted = []
    for name, (weights, biases) in layers.items():
        if name in CONV_LAYERS:
            if weights.ndim != 4:
                raise InputError(f"{path}: {name} weights of shape {weights.shape}; expected (kh, kw, in, out)")
            converted.append(CaffeLayer(name, CONVOLUTION, {}, (weights.transpose(3, 2, 0, 1), biases)))
            continue
        if weights.ndim != 2:
            raise InputError(f"{path}: {name} weights of shape {weights.shape}; expected (in, out)")
        weights = weights.T
        if name == FC_LAYERS[0]:
            weights = _rows_to_channel_major(path, weights, channels=layers[CONV_LAYERS[-1]][0].shape[-1])
        converted.append(CaffeLayer(name, INNER_PRODUCT, {}, (weights, biases)))
    return converted


def _load_dictionary(path: str, data: bytes, what: str) -> dict[str, Any]:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            _, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"NumPy file format {version[0]}.{version[1]}, not one caffe-tensorflow writes")
    except ValueError as error:
        raise InputError(f"{path}: not a NumPy .npy file ({error}); pass {what}") from None
    if dtype != np.dtype(object):
        raise InputError(f"{path}: a NumPy array of {dtype}, not a pickled dictionary of layers; pass {what}")
    try:
        loaded = _ArraysOnly(stream, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise InputError(f"{path}: refused to unpickle it ({error}); pass {what}") from None
    dictionary = loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () else loaded
    if not isinstance(dictionary, Mapping):
        raise InputError(f"{path}: holds a {type(dictionary).__name__}, not a dictionary of layers; pass {what}")
    return {_text(key): value for key, value in dictionary.items()}


def _weights_and_biases(path: str, name: str, params: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(params, Mapping):
        params = {_text(key): value for key, value in params.items()}
        if "weights" not in params or "biases" not in params:
            raise InputError(f"{path}: layer {name!r} has keys {sorted(params)}; expected 'weights' and 'biases'")
        params = [params["weights"], params["biases"]]
    if not isinstance(params, (list, tuple)) or len(params) != 2:
        raise InputError(f"{path}: layer {name!r} holds {type(params).__name__}; expected [weights, biases]")
    weights, biases = (np.asarray(p, np.float32) if isinstance(p, np.ndarray) else p for p in params)
    if not isinstance(weights, np.ndarray) or not isinstance(biases, np.ndarray) or biases.ndim != 1:
        raise InputError(f"{path}: layer {name!r}: expected a weights array and a 1-D biases array")
    return weights, biases


def _rows_to_channel_major(path: str, weights: np.ndarray, channels: int) -> np.ndarray:
    """fc6's ``(out, H·W·C)`` weights (caffe-tensorflow's row order) as Caffe's ``(out, C·H·W)``."""
    out, inputs = weights.shape
    side = math.isqrt(inputs // channels) if inputs % channels == 0 else 0
    if side * side * channels != inputs:
        raise InputError(f"{path}: fc6 takes {inputs} inputs, not a square map of conv5's {channels} channels")
    return weights.reshape(out, side, side, channels).transpose(0, 3, 1, 2).reshape(out, inputs)


def _text(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key
