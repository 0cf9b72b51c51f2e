"""Caffe's AlexNet as our Keras model: the network it needs, the checks, the weights, the mean.

`build_network` makes the `AlexNet` that computes what Caffe's ``bvlc_alexnet`` computes: its
width and class count read from the file (conv1's filters / 96 is the channel multiplier,
fc8's outputs the classes), Caffe's LRN (`AlexNet(lrn_variant="caffe")`: k = 1, alpha divided
by n), Caffe's 227×227 input convolved without padding (``pad_input=False``), and Caffe's
``group: 2`` either as ``Conv2D(groups=2)`` (``layout="grouped"``, Caffe's own layout, exact)
or as our two separate towers (``layout="towers"``, see below).

`check_layers` compares a ``.caffemodel``'s computing layers, in order, with that network's:
type by type (Convolution + ReLU, LRN, Pooling, …, InnerProduct), and each one's kernel, stride,
padding, groups, LRN constants and pooling, so a file that is not AlexNet's (CaffeNet, which
pools before it normalises; a VGG; a truncated net) is refused by naming its first layer that
differs. `set_weights` then checks every blob's shape and converts:

* convolution weights ``(out, in / group, kh, kw)`` → Keras ``(kh, kw, in / group, out)``; with
  separate towers, tower ``t`` takes output filters ``t·out/2 … (t+1)·out/2 − 1`` — exactly the
  filters of Caffe's group ``t``, which see the input channels of group ``t``, the maps tower
  ``t`` gets;
* fc6: Caffe flattens pool5 channel-major (C×H×W), Keras' ``Flatten`` of NHWC maps H×W×C: its
  rows are permuted; inner-product weights ``(out, in)`` → ``(in, out)``;
* Caffe's input is BGR: conv1's kernel takes the channels in reverse, so the model takes RGB.

`view_normalization` turns Caffe's mean (BGR: the 256×256 mean image, per-channel values, or
by default the (104, 117, 123) of Caffe's examples) into our `ViewNormalization`, RGB, so the
imported model takes the input pipeline's uint8 views like any model `fit` saves.

Two towers and LRN: Caffe normalises across all 96 (256) maps of conv1 (conv2), while each of
our towers normalises its own half. So in the towers layout the two maps on either side of
the boundary (channels 46–49 of norm1, 126–129 of norm2) miss two neighbours each from the
other half — the paper's own two-GPU arrangement, not Caffe's. ``grouped`` reproduces Caffe's
numbers; ``towers`` runs under the ``two-tower`` strategy. docs/interoperability.md says which to use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from alexnet_tf import paper
from alexnet_tf.constants import CAFFE_CROP_SIZE, LRN_CAFFE, MEAN_CHANNEL, MEAN_IMAGE
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.network.layers import LocalResponseNormalization, ViewNormalization
from alexnet_tf.network.model import AlexNet, base_name, tower_of
from alexnet_tf.pretrained.caffe import CONVOLUTION, INNER_PRODUCT, LRN, POOLING, RELU, CaffeLayer

GROUPED, TOWERS = "grouped", "towers"
LAYOUTS = (GROUPED, TOWERS)

# Caffe's per-channel ImageNet mean in its BGR order, as its examples and deploy scripts use it.
CAFFE_BGR_MEAN = (104.0, 117.0, 123.0)

# Caffe's name for our layers' kind.
_CAFFE_TYPES = (
    (keras.layers.Conv2D, CONVOLUTION),
    (keras.layers.Dense, INNER_PRODUCT),
    (LocalResponseNormalization, LRN),
    (keras.layers.MaxPooling2D, POOLING),
)


class Step:
    """One computing layer of our network as Caffe would list it: the base name (``conv2``),
    Caffe's type, and our Keras layers for it (one, or one per tower)."""

    def __init__(self, name: str, caffe_type: str, layers: list[keras.layers.Layer]) -> None:
        self.name = name
        self.type = caffe_type
        self.layers = layers

    @property
    def relu(self) -> bool:
        return getattr(self.layers[0], "activation", None) is keras.activations.relu


def build_network(path: str, layers: Sequence[CaffeLayer], layout: str = GROUPED) -> keras.Model:
    """The `AlexNet` to hold the weights of ``layers`` (Caffe's computing layers of the file at
    ``path``, in order)."""
    if layout not in LAYOUTS:
        raise invalid("layout", layout, f"one of {', '.join(LAYOUTS)}")
    weighted = [layer for layer in layers if layer.type in (CONVOLUTION, INNER_PRODUCT) and layer.blobs]
    if not weighted or weighted[0].type != CONVOLUTION or weighted[-1].type != INNER_PRODUCT:
        raise InputError(f"{path}: not AlexNet's layers (convolutions first, an inner product last, with weights)")
    conv1_filters = weighted[0].blobs[0].shape[0]
    return AlexNet(
        num_classes=int(weighted[-1].blobs[0].shape[0]),
        input_size=CAFFE_CROP_SIZE,
        grouped_convolutions=layout == GROUPED,
        lrn_variant=LRN_CAFFE,
        pad_input=False,
        channel_multiplier=conv1_filters / paper.CONV1[0],
        name="alexnet",
    )


def check_layers(path: str, layers: Sequence[CaffeLayer], network: keras.Model) -> None:
    """`InputError` naming the first of Caffe's ``layers`` that does not compute what
    ``network``'s layer at its place does (type, kernel, stride, padding, groups, LRN, pooling)."""
    expected = []
    for step in network_steps(network):
        expected.append(step)
        if step.relu:
            expected.append(Step(f"{step.name}'s ReLU", RELU, []))
    for i, step in enumerate(expected):
        if i == len(layers):
            last = f"after {_named(layers[-1])}" if layers else "without computing layers"
            raise InputError(f"{path}: the net ends {last}; AlexNet goes on with {step.name} ({step.type})")
        layer = layers[i]
        if layer.type != step.type:
            raise InputError(
                f"{path}: {_named(layer)} where AlexNet has {step.name} ({step.type}); not AlexNet's layers"
                + (" (CaffeNet pools before it normalises)" if (layer.type, step.type) == (POOLING, LRN) else "")
            )
    if len(layers) > len(expected):
        raise InputError(f"{path}: {_named(layers[len(expected)])} after AlexNet's last layer; not AlexNet's layers")
    channels = 3
    for step, layer in zip(expected, layers, strict=True):
        if step.type == CONVOLUTION:
            kernel_in = step.layers[0].kernel.shape[2]
            _compare(path, layer, step, _conv_params(step.layers[0], groups=channels // kernel_in))
            channels = sum(keras_layer.filters for keras_layer in step.layers)
        elif step.type == LRN:
            _compare(path, layer, step, _lrn_params(step.layers[0]))
        elif step.type == POOLING:
            _compare(path, layer, step, _pool_params(step.layers[0]))


def set_weights(path: str, layers: Sequence[CaffeLayer], network: keras.Model) -> None:
    """Sets ``network``'s convolution and dense weights from Caffe's ``layers`` (their weighted
    layers, in order), checking each blob's shape; see the module docstring for the conversion."""
    steps = [step for step in network_steps(network) if step.type in (CONVOLUTION, INNER_PRODUCT)]
    weighted = [layer for layer in layers if layer.type in (CONVOLUTION, INNER_PRODUCT)]
    if len(weighted) != len(steps):
        names = ", ".join(layer.name for layer in weighted)
        raise InputError(f"{path}: {len(weighted)} weighted layers ({names}); AlexNet has {len(steps)}")
    pool5 = tuple(network.get_layer("flatten").input.shape[1:])  # (H, W, C)
    for layer, step in zip(weighted, steps, strict=True):
        if len(layer.blobs) != 2:
            raise InputError(
                f"{path}: {_named(layer)} holds {len(layer.blobs)} blobs; AlexNet's {step.name} has weights and biases"
            )
        weights, biases = layer.blobs
        if layer.type != step.type:
            raise InputError(f"{path}: {_named(layer)} where AlexNet has {step.name} ({step.type})")
        if step.type == CONVOLUTION:
            _set_convolution(path, layer, step, weights, biases, bgr=step is steps[0])
        else:
            # The first dense layer (fc6) takes the flattened pool5.
            first_dense = next(s for s in steps if s.type == INNER_PRODUCT)
            _set_dense(path, layer, step, weights, biases, pool5 if step is first_dense else None)


def view_normalization(mean: np.ndarray | None) -> ViewNormalization:
    """Our `ViewNormalization` for Caffe's BGR ``mean`` (`alexnet_tf.pretrained.caffe.read_mean`:
    ``[3, 256, 256]`` or ``[3]``; None: `CAFFE_BGR_MEAN`), its channels in RGB order."""
    bgr = np.asarray(CAFFE_BGR_MEAN if mean is None else mean, np.float32)
    if bgr.ndim == 1:
        layer = ViewNormalization(mean=MEAN_CHANNEL, image_size=paper.IMAGE_SIZE)
        layer.set_mean(bgr[::-1])
        return layer
    if bgr.shape[1:] != (paper.IMAGE_SIZE, paper.IMAGE_SIZE):
        raise InputError(
            f"`mean`: a mean image of {bgr.shape[1]}×{bgr.shape[2]}; expected Caffe's ImageNet mean of "
            f"{paper.IMAGE_SIZE}×{paper.IMAGE_SIZE}, the size of the images the crops are cut from",
            ("mean",),
        )
    layer = ViewNormalization(mean=MEAN_IMAGE, image_size=paper.IMAGE_SIZE)
    layer.set_mean(bgr.transpose(1, 2, 0)[..., ::-1])
    return layer


def network_steps(network: keras.Model) -> list[Step]:
    """The computing layers of ``network`` in order, each tower pair as one step."""
    steps: dict[str, Step] = {}
    for layer in network.layers:
        caffe_type = next((kind for cls, kind in _CAFFE_TYPES if isinstance(layer, cls)), None)
        if caffe_type is None:
            continue
        name = base_name(layer.name)
        steps.setdefault(name, Step(name, caffe_type, [])).layers.append(layer)
    for step in steps.values():
        step.layers.sort(key=lambda layer: tower_of(layer.name) or 0)
    return list(steps.values())


def _set_convolution(
    path: str, layer: CaffeLayer, step: Step, weights: np.ndarray, biases: np.ndarray, bgr: bool
) -> None:
    shapes = [keras_layer.kernel.shape for keras_layer in step.layers]
    kh, kw, kernel_in, _ = shapes[0]
    out = sum(shape[3] for shape in shapes)
    _check_shape(path, layer, step, "weights", weights.shape, (out, kernel_in, kh, kw))
    _check_shape(path, layer, step, "biases", biases.shape, (out,))
    kernel = weights.transpose(2, 3, 1, 0)
    if bgr:
        kernel = kernel[:, :, ::-1, :]  # Caffe's conv1 takes BGR, ours RGB: the same sums, channels reversed
    set_step_weights(step, kernel, biases)


def step_weights(step: Step) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and biases of ``step`` as one layer: its towers' output filters concatenated,
    tower 0's first (Caffe's group 0), which is the grouped layout's kernel."""
    kernels, biases = zip(*(layer.get_weights() for layer in step.layers), strict=True)
    return np.concatenate(kernels, axis=-1), np.concatenate(biases, axis=-1)


def set_step_weights(step: Step, kernel: np.ndarray, biases: np.ndarray) -> None:
    """Sets ``step``'s layers from one layer's kernel and biases (`step_weights`' layout): with
    separate towers, tower ``t`` takes the ``t``-th slice of the output filters."""
    start = 0
    for keras_layer in step.layers:
        stop = start + keras_layer.kernel.shape[-1]
        keras_layer.set_weights([kernel[..., start:stop], biases[start:stop]])
        start = stop


def _set_dense(
    path: str,
    layer: CaffeLayer,
    step: Step,
    weights: np.ndarray,
    biases: np.ndarray,
    spatial: tuple[int, int, int] | None,
) -> None:
    (dense,) = step.layers
    inputs, out = dense.kernel.shape
    _check_shape(path, layer, step, "weights", weights.shape, (out, inputs))
    _check_shape(path, layer, step, "biases", biases.shape, (out,))
    if spatial is not None:
        height, width, channels = spatial
        kernel = weights.reshape(out, channels, height, width).transpose(2, 3, 1, 0).reshape(inputs, out)
    else:
        kernel = weights.T
    dense.set_weights([kernel, biases])


def _check_shape(path: str, layer: CaffeLayer, step: Step, what: str, shape: tuple, expected: tuple) -> None:
    if tuple(shape) != tuple(expected):
        raise InputError(
            f"{path}: {_named(layer)} has {what} {tuple(shape)}; AlexNet's {step.name} needs {tuple(expected)}"
        )


def _conv_params(layer: keras.layers.Conv2D, groups: int) -> dict[str, Any]:
    kh, kw = layer.kernel_size
    pad = ((kh - 1) // 2, (kw - 1) // 2) if layer.padding == "same" else (0, 0)
    return {
        "kernel": tuple(layer.kernel_size),
        "stride": tuple(layer.strides),
        "pad": pad,
        "dilation": tuple(layer.dilation_rate),
        "group": groups,
    }


def _lrn_params(layer: LocalResponseNormalization) -> dict[str, Any]:
    return {
        "local_size": layer.size,
        "alpha": layer.alpha,
        "beta": layer.beta,
        "k": layer.k,
        "norm_region": "ACROSS_CHANNELS",
    }


def _pool_params(layer: keras.layers.MaxPooling2D) -> dict[str, Any]:
    return {
        "pool": "MAX",
        "kernel": tuple(layer.pool_size),
        "stride": tuple(layer.strides),
        "pad": (0, 0),
        "global_pooling": False,
    }


def _compare(path: str, layer: CaffeLayer, step: Step, expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        found = layer.params.get(key)
        same = np.isclose(found, value, rtol=1e-6) if isinstance(value, float) else found == value
        if not same:
            found = f"{found:.6g}" if isinstance(found, float) else found
            raise InputError(f"{path}: {_named(layer)} has {key} {found}; AlexNet's {step.name} has {value}")


def _named(layer: CaffeLayer) -> str:
    return f"layer {layer.name!r} ({layer.type})"
