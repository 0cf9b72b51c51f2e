"""alexnet-tf: AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow / Keras 3.

Importing the package loads neither TensorFlow nor Keras: `AlexNet`, `LocalResponseNormalization`
and `ViewNormalization` are imported on first use, so the command line's help and its early errors
answer at once. Importing `alexnet_tf.network.layers` (which `AlexNet` and every model-loading function
do) registers the custom layers, so ``.keras`` files load with
``keras.saving.load_model(path, safe_mode=True)``.

Layout (dependencies run one way, top to bottom):

* `alexnet_tf.paper`: the paper's constants; `alexnet_tf.constants`: the other names and numbers
  several layers share (import-free); `alexnet_tf.errors`, `alexnet_tf.files`: bad-input errors
  and atomic writes, used by everything; `alexnet_tf.startup`: TensorFlow's start-up noise, filtered;
* `alexnet_tf.network.layers`, `alexnet_tf.network.model`: the network (LRN, tower placement,
  `ViewNormalization`) and `AlexNet`; they import no data code;
* `alexnet_tf.records`: the contract between writer and reader (TFRecord schema, metadata);
* `alexnet_tf.prepare`: the offline converter, image folders to records (Pillow, processes);
* `alexnet_tf.input`: the online `tf.data` pipeline over records (decode, views, augment);
* `alexnet_tf.synthetic`: small generated datasets for tests, benchmarks and the demo;
* `alexnet_tf.figures`: pictures of a run (conv1 filters, fc7 neighbours, learning curves);
* `alexnet_tf.tuning`: the keras-tuner search whose trials are `alexnet_tf.training.fit.fit` runs;
* `alexnet_tf.cli`: the ``alexnet-tf`` command, a thin layer over the above.
"""

import importlib
import os
from typing import Any

from alexnet_tf import startup

# TensorFlow's C++ INFO lines (CPU feature notes, tf.data hints) drown the tools' own output;
# keep warnings and errors. An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
startup.install()

__version__ = "0.1.0"
__all__ = ["AlexNet", "LocalResponseNormalization", "ViewNormalization", "__version__"]

# The public names, imported on first use (PEP 562): importing the package or any of its light
# modules (the command line, recipes, constants) does not load TensorFlow and Keras.
_LAZY = {
    "AlexNet": "alexnet_tf.network.model",
    "LocalResponseNormalization": "alexnet_tf.network.layers",
    "ViewNormalization": "alexnet_tf.network.layers",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
