"""Dropout masks as a function of (run seed, global step, replica, layer), so that resume is exact.

Keras' `Dropout` draws its masks from a `keras.random.SeedGenerator`: a counter variable that
Keras 3 keeps outside TensorFlow's object graph, so `tf.train.Checkpoint` does not save it. A
resumed run restarts the counter and draws other masks than the uninterrupted run would have:
its weights drift apart. Built in a mirrored strategy's scope (as fit builds it), the counter is
also one for all replicas: every replica of a step draws the same masks for its own examples.

`use_step_seeds` gives each Dropout layer a `StepSeeds` instead: a stateless seed derived, at
every call, from a *step key* ``[run seed, global step]`` (both in fit's checkpoint), the
replica's index in the sync group and the layer. Nothing to save, nothing to lose, and different
masks per replica. The layers, their variables and what ``.keras`` files store do not change.

The step key is a variable of its own, created in the strategy's scope and assigned by the
training step before each step: under a mirrored strategy every replica then reads its own copy,
which XLA requires (a compiled step cannot read a variable on another device).
"""

from __future__ import annotations

import keras
import tensorflow as tf


class StepSeeds(keras.random.SeedGenerator):
    """A `SeedGenerator` whose every seed is a hash of (step key, replica, layer)."""

    def __init__(self, key: tf.Variable, layer: int) -> None:
        # Not SeedGenerator.__init__: that creates the counter variable this class replaces.
        self.name = f"step_seeds_{layer}"
        self.backend = keras.backend
        self._key, self._layer = key, layer

    def next(self, ordered: bool = True) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        replica = 0 if context is None else context.replica_id_in_sync_group  # None: cross-replica context
        seed = tf.random.experimental.stateless_fold_in(
            tf.convert_to_tensor(self._key), tf.constant(self._layer, tf.int64)
        )
        return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int64))


def use_step_seeds(model: keras.Model) -> tf.Variable:
    """Gives every Dropout layer of ``model`` (its own layers, not nested models') a `StepSeeds`;
    returns their step key, an int64 ``[seed, global step]`` to assign before each training step.
    Call it in the strategy's scope (see the module docstring)."""
    key = tf.Variable(tf.zeros([2], tf.int64), trainable=False, name="dropout_step_key")
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout) and layer.rate > 0]
    for index, layer in enumerate(layers):
        # Around Keras' attribute tracking: that would list the generator's (absent) state among
        # the layer's variables, and it refuses new state once the layer is built.
        object.__setattr__(layer, "seed_generator", StepSeeds(key, index))
    return key
