"""Learning-rate policies, with their state in variables so that checkpoints carry it.

* ``plateau`` (§5): "divide the learning rate by 10 when the validation error rate stopped
  improving with the current learning rate", at most ``max_reductions`` (three) times. Improving
  means a validation top-1 error lower than the best so far by more than ``min_delta``;
  ``patience`` validations without one (one per epoch unless ``training.validate_every_epochs``)
  trigger a reduction and restart the count.
* ``step``: ÷10 (``factor``) every ``step_epochs`` epochs, the usual fixed-budget reproduction.
* ``constant``.

`LearningRateSchedule.end_of_epoch` is called once per finished epoch with its validation
error; it returns the rate for the next epoch. Its counters (best error, epochs without
improvement, reductions made) are `tf.Variable`s tracked by the run's checkpoint, so a resumed
run continues the plateau count where it stopped (Keras' ``ReduceLROnPlateau`` restarts it).
"""

from __future__ import annotations

import math

import tensorflow as tf

from alexnet_tf.recipe import ScheduleSection


class LearningRateSchedule(tf.Module):
    """The recipe's learning-rate policy, from ``initial_rate`` (already batch-scaled)."""

    def __init__(self, section: ScheduleSection, initial_rate: float) -> None:
        super().__init__(name="schedule")
        self.section = section
        self.initial_rate = initial_rate
        self.best_error = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_error")
        self.epochs_without_improvement = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")
        self.reductions = tf.Variable(0, dtype=tf.int64, trainable=False, name="reductions")

    def rate(self) -> float:
        """The learning rate for the epoch after the ones seen so far."""
        return self.initial_rate * self.section.factor ** int(self.reductions.numpy())

    def end_of_epoch(self, epoch: int, validation_error: float | None) -> float:
        """Updates the state after epoch ``epoch`` (0-based) and returns the next epoch's rate."""
        section = self.section
        if section.policy == "step":
            self.reductions.assign((epoch + 1) // section.step_epochs)
        elif section.policy == "plateau" and validation_error is not None:
            if validation_error < float(self.best_error.numpy()) - section.min_delta:
                self.best_error.assign(validation_error)
                self.epochs_without_improvement.assign(0)
            else:
                self.epochs_without_improvement.assign_add(1)
                waited = int(self.epochs_without_improvement.numpy()) >= section.patience
                if waited and int(self.reductions.numpy()) < section.max_reductions:
                    self.reductions.assign_add(1)
                    self.epochs_without_improvement.assign(0)
        return self.rate()
