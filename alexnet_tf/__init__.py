"""alexnet-tf: AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow / Keras 3.

Importing the package registers its custom layers, so ``.keras`` files load with
``keras.saving.load_model(path, safe_mode=True)``.
"""

import os

# TensorFlow's C++ INFO lines (CPU feature notes, tf.data hints) drown the tools' own output;
# keep warnings and errors. An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from alexnet_tf.data.normalization import ViewNormalization
from alexnet_tf.layers import LocalResponseNormalization
from alexnet_tf.model import AlexNet

__version__ = "0.1.0"
__all__ = ["AlexNet", "LocalResponseNormalization", "ViewNormalization", "__version__"]
