"""alexnet-tf: AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow / Keras 3.

Importing the package registers its custom layers, so ``.keras`` files load with
``keras.saving.load_model(path, safe_mode=True)``.

Layout (dependencies run one way, top to bottom):

* `alexnet_tf.paper`: the paper's constants; `alexnet_tf.errors`, `alexnet_tf.files`: bad-input
  errors and atomic writes, used by everything;
* `alexnet_tf.layers`, `alexnet_tf.model`: the network (LRN, tower placement,
  `ViewNormalization`) and `AlexNet`; they import no data code;
* `alexnet_tf.records`: the contract between writer and reader (TFRecord schema, metadata);
* `alexnet_tf.prepare`: the offline converter, image folders to records (Pillow, processes);
* `alexnet_tf.input`: the online `tf.data` pipeline over records (decode, views, augment);
* `alexnet_tf.synthetic`: small generated datasets for tests, benchmarks and the demo;
* `alexnet_tf.figures`: pictures of a run (conv1 filters, fc7 neighbours, learning curves);
* `alexnet_tf.tuning`: the keras-tuner search whose trials are `alexnet_tf.train.fit` runs;
* `alexnet_tf.cli`: the ``alexnet-tf`` command, a thin layer over the above.
"""

import os
import sys
import tempfile

# TensorFlow's C++ INFO lines (CPU feature notes, tf.data hints) drown the tools' own output;
# keep warnings and errors. An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# TF 2.21 logs "oneDNN custom operations are on" (twice, once per library that loads) through
# absl before absl's logging is initialised, with a banner saying so; TF_CPP_MIN_LOG_LEVEL does
# not reach those lines. They are filtered out of the process's stderr while TensorFlow loads;
# everything else it prints there is passed on.
_STARTUP_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "] oneDNN custom operations are on.",
)


def _import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(noise in line for noise in _STARTUP_NOISE)]  # fmt: skip
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


_import_tensorflow_quietly()

from alexnet_tf.layers import LocalResponseNormalization, ViewNormalization  # noqa: E402
from alexnet_tf.model import AlexNet  # noqa: E402

__version__ = "0.1.0"
__all__ = ["AlexNet", "LocalResponseNormalization", "ViewNormalization", "__version__"]
