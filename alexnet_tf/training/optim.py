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

Fine-tuning (the recipe's ``finetune`` section): `freeze_layers` takes the first layers out of
training altogether; `update_scales` / `scale_updates` give a layer a multiple of the base
learning rate, as Caffe's per-layer ``lr_mult`` does (its fine-tuning examples: 10× for the new head).

Under a distribution strategy the data loss is averaged over the global batch
(`tf.nn.compute_average_loss`) and the gradients are summed over replicas; the L2 term is added
once per replica, so it is divided by the number of replicas (`tf.nn.scale_regularization_loss`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from alexnet_tf.network.model import base_name
from alexnet_tf.recipe import LAYERS, OptimizerSection


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


def freeze_layers(network: keras.Model, freeze: str | None) -> list[str]:
    """Makes conv1 … ``freeze`` (`alexnet_tf.recipe.FREEZABLE`; both towers, or the grouped
    layer) non-trainable, so they are left out of the optimizer, the gradients and the weight
    decay: no update at all. Returns the frozen base names. Their values are still in the model,
    so checkpoints and resume are unchanged; the optimizer has no slots for them, so a run's
    ``finetune.freeze`` cannot change on resume (the recipe check refuses it)."""
    if freeze is None:
        return []
    frozen = LAYERS[: LAYERS.index(freeze) + 1]
    for layer in network.layers:
        if base_name(layer.name) in frozen:
            layer.trainable = False
    return list(frozen)


def update_scales(variables: Sequence[keras.Variable], multipliers: Mapping[str, float]) -> list[float]:
    """Each variable's learning-rate multiplier (``finetune.lr_multipliers`` by base layer name;
    1 for layers not named)."""
    return [float(multipliers.get(base_name(v.path.split("/")[-2]), 1.0)) for v in variables]


def scale_updates(gradients: Sequence[tf.Tensor], scales: Sequence[float]) -> list[tf.Tensor]:
    """``gradients`` (of the loss plus §5's L2 term) times their variable's multiplier. SGD with
    momentum is linear in the gradient, so this scales each variable's whole update, weight
    decay included: Caffe's ``lr_mult`` (``v ← m·v + ε·lr_mult·(∂L/∂w + λ·w)``)."""
    return [g if s == 1.0 else g * tf.constant(s, g.dtype) for g, s in zip(gradients, scales, strict=True)]
