"""Training: ``alexnet-tf fit`` and the parts it is made of.

* `fit`: `FitConfig`, `fit` (strategy, precision, the one input pipeline, the checks before
  anything is written), `FitResult`;
* `trainer`: `Trainer`, the model, optimizer and one global step (public: `build`,
  `train_step`, `eval_step`, `train_data`, `eval_data`, `restore`);
* `loop`: `TrainingLoop`, the epochs and what they write into the run directory
  (`alexnet_tf.runs`); `timings`: where the wall time went; `tensorboard`: the event files;
* `distribute` (strategies, devices), `cluster` (multi-worker start and loss), `checkpoints`
  (which one to resume from), `dropout_seeds` (masks from the step), `precision` (mixed
  precision, "auto"), `optim` (§5's SGD) and `schedule` (the learning-rate policies).

Ctrl-C and SIGTERM are `alexnet_tf.preemption`'s (shared with the other resumable jobs).
Importing this package loads nothing heavy;
``from alexnet_tf.training.fit import FitConfig, fit`` is the Python entry point.
"""
