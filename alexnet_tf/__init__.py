"""alexnet-tf: AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow / Keras 3.

Importing the package registers its custom layers, so ``.keras`` files load with
``keras.saving.load_model(path, safe_mode=True)``.
"""

from alexnet_tf.layers import LocalResponseNormalization
from alexnet_tf.model import AlexNet

__version__ = "0.1.0"
__all__ = ["AlexNet", "LocalResponseNormalization", "__version__"]
