"""TF Serving's warm-up file, written without `tensorflow-serving-api`.

TF Serving replays ``<version>/assets.extra/tf_serving_warmup_requests`` (a TFRecord file of
``tensorflow.serving.PredictionLog`` protos, at most 1000) when it loads a version, so the first
real request does not pay for graph set-up. The protos ship in ``tensorflow-serving-api``, whose
wheel requires the ``tensorflow`` distribution and would replace ``tensorflow-cpu`` (or a GPU
build) in the user's environment. Vendoring the serving ``.proto`` files would mean generated
code to keep in step with protobuf releases, and message names that clash with the real ones
in protobuf's default descriptor pool when both are imported.

The part we need is five small, stable messages, so this module writes their protobuf wire
format directly (length-delimited fields only)::

    PredictionLog { PredictLog predict_log = 6; }
    PredictLog    { PredictRequest request = 1; }
    PredictRequest { ModelSpec model_spec = 1; map<string, TensorProto> inputs = 2; }
    ModelSpec     { string name = 1; string signature_name = 3; }   // version = 2 left unset
    map entry     { string key = 1; TensorProto value = 2; }

``TensorProto`` comes from `tf.make_tensor_proto`, which ships with TensorFlow. The model
version is left out: the file lives inside one version directory, and a version directory copied
under another number stays valid. `tests/test_export.py` parses the records back with an
independently built descriptor and runs them against the exported signatures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import tensorflow as tf

WARMUP_FILENAME = "tf_serving_warmup_requests"
EXTRA_ASSETS_DIR = "assets.extra"

_LENGTH_DELIMITED = 2


def predict_log(model_name: str, signature_name: str, inputs: Mapping[str, Any]) -> bytes:
    """One serialized ``PredictionLog`` holding a ``PredictRequest`` for ``signature_name``.

    ``inputs`` maps the signature's input keys to values `tf.make_tensor_proto` accepts.
    """
    model_spec = _field(1, model_name.encode("utf-8")) + _field(3, signature_name.encode("utf-8"))
    entries = b"".join(
        _field(2, _field(1, key.encode("utf-8")) + _field(2, tf.make_tensor_proto(value).SerializeToString()))
        for key, value in sorted(inputs.items())
    )
    request = _field(1, model_spec) + entries
    return _field(6, _field(1, request))


def write_warmup_file(path: str, records: Iterable[bytes]) -> None:
    """Writes serialized ``PredictionLog`` records as the TFRecord file TF Serving reads."""
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: key (number, wire type 2), length, payload."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
