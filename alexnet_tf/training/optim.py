"""The paper's SGD (§5), exactly: momentum with the weight decay inside it.

§5: ``v ← 0.9·v − 0.0005·ε·w − ε·∂L/∂w;  w ← w + v``.

Keras' ``SGD(momentum=m)`` updates ``v ← m·v − ε·g; w ← w + v``, so the paper's rule is that
optimizer with ``g = ∂L/∂w + 0.0005·w``: the gradient of the loss plus an L2 term
``0.0005/2 · Σ w²`` (the ½ makes its gradient exactly ``0.0005·w``; Model Garden's
"divide weight decay by 2.0 to match tf.nn.l2_loss" is the same point). Keras' own
``weight_decay=`` is decoupled (``w ← w − ε·λ·w`` outside the momentum) and is *not* this.

Which variables decay: the kernels (convolution and fully connected weights). The paper says
"weight decay"; its code (cuda-convnet's layer files set ``wc`` for weights, nothing for biases)
and Caffe's ``bvlc_alexnet`` (``decay_mult: 0`` on biases) leave the biases alone, and decaying
the biases of 1 that §5 sets on purpose would pull them back towards 0. ``decayed="all"`` in
the recipe decays everything trainable, for comparison.

Under a distribution strategy the data loss is averaged over the global batch
(`tf.nn.compute_average_loss`) and the gradients are summed over replicas; the L2 term is added
once per replica, so it is divided by the number of replicas (`tf.nn.scale_regularization_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from alexnet_tf.recipe import OptimizerSection


def make_optimizer(section: OptimizerSection, learning_rate: float, mixed_float16: bool) -> keras.optimizers.Optimizer:
    """Keras SGD with §5's momentum; wrapped in a `LossScaleOptimizer` under ``mixed_float16``.

    Build it inside the strategy's scope. ``learning_rate`` is the initial rate (after batch
    scaling); the schedule assigns ``optimizer.learning_rate`` between steps.
    """
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=section.momentum, name="sgd")
    if mixed_float16:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name="loss_scale")
    return optimizer


def decayed_variables(model: keras.Model, section: OptimizerSection) -> list[keras.Variable]:
    """The variables §5's weight decay applies to: kernels only, or everything (``decayed``)."""
    if section.decayed == "all":
        return list(model.trainable_variables)
    return [v for v in model.trainable_variables if v.path.endswith("/kernel")]


def l2_loss(variables: Sequence[keras.Variable], weight_decay: float) -> tf.Tensor:
    """``weight_decay/2 · Σ w²`` over ``variables`` (float32), whose gradient is ``weight_decay·w``.

    Scaled for the replicas in sync (`tf.nn.scale_regularization_loss`): call it in the
    replica function and add it to the per-replica loss.
    """
    total = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v.value, tf.float32))) for v in variables])
    return tf.nn.scale_regularization_loss(0.5 * weight_decay * total)
