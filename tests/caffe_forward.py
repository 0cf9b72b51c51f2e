"""Caffe's forward pass of AlexNet in NumPy (float64), independent of TensorFlow and of the importer.

Written from Caffe's layer definitions: the input is a BGR crop, 0–255, minus the BGR mean
(the mean image's window at the crop's offset, or one value per channel), channels first;
convolutions with zero padding, stride and groups (group g's filters see input channels
g·C/G … (g+1)·C/G − 1) on Caffe's weights ``(out, in / group, kh, kw)``; ReLU; LRN across
channels ``x / (k + alpha / n · Σ x²)^β`` over a window of n channels zero-padded at the edges;
max pooling whose output size rounds up (Caffe's default) with windows clipped at the border;
pool5 flattened C×H×W before fc6; inner products ``W x + b`` on weights ``(out, in)``.
"""

from __future__ import annotations

import math

import numpy as np

from tests.caffe_files import ALEXNET


def convolution(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, group: int) -> np.ndarray:
    channels, height, width = x.shape
    out, per_group, kh, kw = w.shape
    assert per_group * group == channels
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out_h = (height + 2 * pad - kh) // stride + 1
    out_w = (width + 2 * pad - kw) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    assert windows.shape[1:3] == (out_h, out_w)
    result = np.empty((out, out_h, out_w))
    step = out // group
    for g in range(group):
        patches = windows[g * per_group : (g + 1) * per_group]  # (C/G, H', W', kh, kw)
        columns = patches.transpose(1, 2, 0, 3, 4).reshape(out_h * out_w, -1)
        filters = w[g * step : (g + 1) * step].reshape(step, -1)
        result[g * step : (g + 1) * step] = (columns @ filters.T).T.reshape(step, out_h, out_w)
    return result + b[:, None, None]


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float = 1.0) -> np.ndarray:
    squares = np.pad(x**2, ((size // 2, size // 2), (0, 0), (0, 0)))
    window_sums = sum(squares[i : i + x.shape[0]] for i in range(size))
    return x / (k + alpha / size * window_sums) ** beta


def max_pool(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    channels, height, width = x.shape
    out_h = math.ceil((height - kernel) / stride) + 1
    out_w = math.ceil((width - kernel) / stride) + 1
    result = np.empty((channels, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(i * stride, min(i * stride + kernel, height))
            columns = slice(j * stride, min(j * stride + kernel, width))
            result[:, i, j] = x[:, rows, columns].max(axis=(1, 2))
    return result


def forward(
    weights: dict, crop_rgb: np.ndarray, mean_bgr: np.ndarray, offset: tuple[int, int] = (14, 14), lrn_groups: int = 1
) -> np.ndarray:
    """fc8's outputs (logits) for one uint8 RGB crop ``[227, 227, 3]`` cut at ``offset`` of a
    256×256 image; ``mean_bgr`` is ``[3]`` or the mean image ``[3, 256, 256]``.

    ``weights``: {layer: (weights, biases)} in Caffe's layout, AlexNet's layer names.
    ``lrn_groups=2`` normalises each half of the channels on its own (not Caffe: our separate
    towers' LRN).
    """
    x = crop_rgb[..., ::-1].transpose(2, 0, 1).astype(np.float64)  # BGR, channels first
    side = x.shape[1]
    if mean_bgr.ndim == 1:
        x -= mean_bgr[:, None, None]
    else:
        x -= mean_bgr[:, offset[0] : offset[0] + side, offset[1] : offset[1] + side]
    for name, kind, params in ALEXNET:
        if kind == "Convolution":
            _, _, stride, pad, group = params
            x = convolution(x, *weights[name], stride, pad, group)
        elif kind == "ReLU":
            x = np.maximum(x, 0.0)
        elif kind == "LRN":
            x = np.concatenate([lrn(half, *params) for half in np.split(x, lrn_groups)])
        elif kind == "Pooling":
            x = max_pool(x, *params)
        elif kind == "InnerProduct":
            w, b = weights[name]
            x = w @ x.reshape(-1) + b  # C×H×W order for fc6
    return x


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
