"""`fit`: trains AlexNet on prepared records with a recipe, under a `tf.distribute` strategy.

A custom loop rather than ``model.fit``: Keras 3's ``fit`` fails under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), its ``BackupAndRestore`` replays a
resumed epoch from its first batch and ``ReduceLROnPlateau`` forgets its counters on resume.
Here, as in Model Garden's trainer: the strategy is made once; the model and optimizer are built
in its scope; ``strategy.distribute_datasets_from_function`` gives each input pipeline its
share of the files and each replica ``batch_size / replicas`` of the global batch; one
`tf.function` step calls ``strategy.run``; the loss is averaged over the global batch
(`tf.nn.compute_average_loss`) and the L2 term scaled per replica (`alexnet_tf.optim`).

Strategies (``FitConfig.strategy``, `alexnet_tf.distribute`): ``one-device``, ``mirrored``,
``multi-worker`` (``TF_CONFIG``), ``tpu`` (not tested here) and ``two-tower``, the paper's model
parallelism (§3.2): tower 0's layers and variables on device 0, tower 1's on device 1 (GPUs, else
logical CPUs), everything else (the fully connected layers, the loss) on ``fc_device``. No data
parallelism with it, and no XLA: XLA ignores ``tf.device`` (tensorflow/tensorflow#124880), so
``jit_compile`` is refused with it.

The run directory (`alexnet_tf.runs`, its one owner and its one description): the chief writes
the recipe, classes, history, models and TensorBoard there; under ``multi-worker`` the other
workers checkpoint to temporary directories they delete.

Resume: re-running the same command restores the latest checkpoint and continues at its epoch
and step; each epoch's data stream is seeded from the data seed stored in the checkpoint and the
epoch number, so the resumed epoch's stream is the one the interrupted run had, and the batches
of it already trained are skipped before decoding (`InputPipeline.train_dataset`'s
``skip_batches``: the records are read, not decoded). A checkpoint whose objects do not match
this run's (e.g. mixed precision changed, which wraps the optimizer) is refused. The checkpoint
resumed from is the newest that reads back whole (`alexnet_tf.checkpoints`: a damaged one is
moved aside, a garbled state file rebuilt). Dropout's masks are a function of (data seed, global
step, replica, layer) (`alexnet_tf.dropout_seeds`), and the epoch's running sums are in the
checkpoint, so with ``input.deterministic`` a resumed run ends with the weights and history rows
of an uninterrupted one, bit for bit. Resuming from the checkpoint that ends an epoch writes that
epoch's last.keras (and best.keras, if it was the best) from it again: the checkpoint comes
before them, and a stop in between would leave them stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import posixpath
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from alexnet_tf import checkpoints, files, locks, optim, precision, preemption, runs
from alexnet_tf.cluster import lost_workers
from alexnet_tf.distribute import (
    configure_devices,
    distribute_datasets,
    is_chief,
    make_strategy,
    padded_if_empty,
    sum_over_replicas,
    tower_placement,
)
from alexnet_tf.dropout_seeds import use_step_seeds
from alexnet_tf.errors import InputError
from alexnet_tf.input import bad_records, service
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.layers import with_view_normalization
from alexnet_tf.model import AlexNet
from alexnet_tf.recipe import Recipe
from alexnet_tf.records import schema
from alexnet_tf.runs import BEST_MODEL, CHECKPOINTS, HISTORY, LAST_MODEL, TENSORBOARD
from alexnet_tf.schedule import LearningRateSchedule

logger = logging.getLogger(__name__)

# Augmented inputs drawn to TensorBoard at the start of a run.
SUMMARY_IMAGES = 4
# Test hook: fit stops at the named moment (`_pause_for_tests`) so that a fault test can kill it there.
PAUSE_ENV = "ALEXNET_TF_TEST_PAUSE"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the learning rate."""


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """One training run.

    Attributes:
      data_dir: prepare-data output (records, metadata.json, mean_image.npy).
      model_dir: the run directory (see the module docstring); created if missing.
      recipe: the resolved recipe (`alexnet_tf.recipe.load_recipe`).
      strategy: one of `alexnet_tf.distribute.STRATEGIES`.
      devices: split the CPU into this many logical devices (for ``mirrored`` and ``two-tower``
        without GPUs); must be set before TensorFlow initialises its devices.
      fc_device: ``two-tower``: device of the fully connected layers (default: tower 0's).
      allow_recipe_change: continue a run whose recorded recipe differs (the new one is recorded).
      overwrite: delete the run directory's previous contents and start again.
      verbose: print a progress bar and per-epoch lines (chief only).
      skip_bad_records: leave out records that cannot be read or decoded, and say at each
        epoch's end how many and which (`alexnet_tf.input.bad_records`), instead of stopping at
        the first with a line naming it.
      worker_timeout: ``multi-worker``: seconds to wait for the other workers to start
        (default: ``$ALEXNET_TF_WORKER_TIMEOUT`` or 600; `alexnet_tf.cluster`).
    """

    data_dir: str
    model_dir: str
    recipe: Recipe = Recipe()
    strategy: str = "one-device"
    devices: int | None = None
    fc_device: str | None = None
    allow_recipe_change: bool = False
    overwrite: bool = False
    verbose: bool = True
    skip_bad_records: bool = False
    worker_timeout: float | None = None


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What a finished run produced."""

    epochs: int
    steps: int
    best_val_top1: float
    history: list[dict[str, float]]
    model_dir: str
    resumed_from: tuple[int, int] | None
    model: keras.Model  # the trained model on views (what last.keras holds)

    def summary(self) -> str:
        return (
            f"trained {self.epochs} epochs ({self.steps} steps); best validation top-1 {self.best_val_top1:.4f}; "
            f"run directory {self.model_dir}: {BEST_MODEL}, {LAST_MODEL}, {HISTORY}, {CHECKPOINTS}/, {TENSORBOARD}/"
        )


# --- The input pipeline ----------------------------------------------------------------------


def _input_pipeline(data_dir: str, recipe: Recipe, seed: int, skip_bad_records: bool = False) -> InputPipeline:
    """The run's `InputPipeline`: the recipe's input section, its global batch and precision."""
    section = recipe.input
    precision = recipe.training.mixed_precision
    return InputPipeline(
        InputConfig(
            data_dir,
            batch_size=recipe.training.batch_size,
            shuffle_buffer=section.shuffle_buffer,
            label_offset=section.label_offset,
            mean=section.mean,
            lighting_strength=section.lighting_strength,
            crop_size=section.crop_size,
            dtype="float32" if precision == "none" else precision.removeprefix("mixed_"),
            normalize_in_model=section.normalize_in_model,
            deterministic=section.deterministic,
            seed=seed,
            skip_bad_records=skip_bad_records,
        )
    )


def _view_normalization(pipeline: InputPipeline) -> keras.layers.Layer | None:
    """The layer that finishes the pipeline's uint8 views, or None for float views."""
    return pipeline.view_normalization() if pipeline.config.normalize_in_model else None


# --- Strategies ----------------------------------------------------------------------------------


def _check_combination(config: FitConfig, strategy: tf.distribute.Strategy) -> None:
    recipe = config.recipe
    if config.strategy == "two-tower":
        if not recipe.model.two_towers:
            raise InputError("--strategy two-tower needs model.two_towers=true (one device per tower)")
        if recipe.training.jit_compile:
            raise InputError(
                "--strategy two-tower with training.jit_compile=true: XLA ignores tf.device placement "
                "(tensorflow/tensorflow#124880); set training.jit_compile=false"
            )
    replicas = strategy.num_replicas_in_sync
    if recipe.training.batch_size % replicas:
        raise InputError(
            f"training.batch_size={recipe.training.batch_size} does not divide over {replicas} replicas: "
            f"use a multiple of {replicas}"
        )


# --- The run ---------------------------------------------------------------------------------------


class _RunState(tf.Module):
    """The counters a checkpoint carries besides the model and optimizer."""

    def __init__(self, seed: int) -> None:
        super().__init__(name="run_state")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")  # epochs finished
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")  # global steps done
        self.data_seed = tf.Variable(seed, dtype=tf.int64, trainable=False, name="data_seed")
        self.best_val_top1 = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_val_top1")


class _Progress(tf.Module):
    """What exact resume needs besides `_RunState`, the checkpoint's ``progress`` (a checkpoint
    written before it existed is restored without it: its epoch's row then covers the steps
    after the resume only, and best.keras is left as it is).

    ``sums``: loss × images, top-1 hits, top-5 hits, images and seconds of the current epoch's
    steps so far, so that the history row of an epoch that was resumed covers all its steps.
    ``best_epoch``: the finished epoch with the best validation top-1 (-1: none yet), so that a
    re-run can write best.keras from the checkpoint if the stop came before it was written.
    """

    def __init__(self) -> None:
        super().__init__(name="progress")
        self.sums = tf.Variable(tf.zeros(5, tf.float64), trainable=False, name="epoch_sums")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")


def fit(config: FitConfig) -> FitResult:
    """Trains (or resumes) the run in ``config.model_dir``; see the module docstring.

    Raises:
      InputError: bad data directory, recipe, strategy combination, TF_CONFIG, or a checkpoint
        that does not match this run; `alexnet_tf.locks.DirectoryInUse` if another process
        runs in the run directory.
      TrainingDiverged: the loss became NaN or infinite (the last good checkpoint is kept).
      preemption.Stopped: SIGINT or SIGTERM (here or on another worker), after saving a
        checkpoint at the step boundary where training stopped (`alexnet_tf.preemption`).
      KeyboardInterrupt: a second Ctrl-C, without saving.
      WorkerLost: ``multi-worker``: another worker went away (`alexnet_tf.cluster`).
    """
    configure_devices(config.devices)
    strategy = make_strategy(config.strategy, config.worker_timeout)
    _check_combination(config, strategy)
    chief = is_chief(strategy)
    config = _resolve_precision(config, chief)
    _check_can_start(config)
    # One run per run directory; under multi-worker only the chief writes it (`alexnet_tf.locks`).
    with locks.lock_directory(config.model_dir, "fit") if chief else contextlib.nullcontext():
        run = _Run(config, strategy, chief)
        try:
            checkpoint_dir = posixpath.join(config.model_dir, CHECKPOINTS)
            with (
                _precision(config.recipe),
                bad_records.explained(config.data_dir),
                run.stop,
                lost_workers(strategy, checkpoint_dir),
            ):
                return run.train()
        finally:
            run.close()


def _check_can_start(config: FitConfig) -> None:
    """Refuses bad data or a recipe that does not fit it before anything is written: a refused run
    must leave no recipe.yaml behind to refuse the corrected command as "a different recipe".
    Builds the input pipeline and its datasets as the run will (their checks: splits, shards,
    statistics) and checks that the training split holds a batch."""
    pipeline = _input_pipeline(config.data_dir, config.recipe, seed=0)
    _steps_per_epoch(config, pipeline)
    pipeline.train_dataset()
    pipeline.eval_dataset()
    service.check_can_start(config.recipe, config.skip_bad_records, config.worker_timeout)


def _steps_per_epoch(config: FitConfig, pipeline: InputPipeline) -> int:
    training = config.recipe.training
    train_records = pipeline.num_records()
    steps = training.steps_per_epoch or train_records // training.batch_size
    if steps < 1:
        raise_batch_too_large(config.data_dir, train_records, training.batch_size)
    return steps


def raise_batch_too_large(data_dir: str, train_records: int, batch_size: int) -> None:
    """The one refusal of a global batch larger than the training split (fit and tune)."""
    raise InputError(
        f"{data_dir}: {train_records} training records are fewer than training.batch_size={batch_size}: "
        "use a smaller batch"
    )


SOURCES = ("pipeline", "in-memory")


def measure_throughput(config: FitConfig, steps: int, warmup: int, blocks: int = 1) -> dict[str, list[float]]:
    """Training images per second of `fit`'s step on ``config``, fed by each of `SOURCES` (for
    ``tools/bench_fit.py``): ``{source: [images/s of each block]}``.

    ``pipeline`` is the real input pipeline over the records; ``in-memory`` is the same step fed
    one batch of that pipeline's output cached in memory and repeated (no reading, decoding or
    augmentation), the rate the pipeline is compared with. One model and one step alternate
    between the two in ``blocks`` pairs of ``steps`` timed steps, each block after one untimed
    step on its source, so that the two rates of a pair are measured seconds apart on the same
    machine state. Writes only ``recipe.yaml`` into ``config.model_dir``.
    """
    configure_devices(config.devices)
    strategy = make_strategy(config.strategy)
    _check_combination(config, strategy)
    config = _resolve_precision(config, chief=False)
    run = _Run(config, strategy, chief=True)
    try:
        with _precision(config.recipe):
            pipeline = _input_pipeline(config.data_dir, config.recipe, int(run.state.data_seed.numpy()))
            run._build(pipeline)
            iterators = {
                "pipeline": iter(distribute_datasets(strategy, pipeline.train_dataset)),
                "in-memory": iter(
                    distribute_datasets(
                        strategy, lambda context: pipeline.train_dataset(context).take(1).cache().repeat()
                    )
                ),
            }
            train_step = run._make_train_step()
            for iterator in iterators.values():
                for _ in range(warmup):
                    float(train_step(iterator)[0])
            rates: dict[str, list[float]] = {source: [] for source in SOURCES}
            for _ in range(blocks):
                for source in SOURCES:
                    iterator = iterators[source]
                    float(train_step(iterator)[0])  # the switch: refills of the other source's buffers
                    start = time.perf_counter()
                    for _ in range(steps):
                        float(train_step(iterator)[0])  # synchronise every step, as `fit` does
                    rates[source].append(steps * config.recipe.training.batch_size / (time.perf_counter() - start))
            return rates
    finally:
        run.close()


def _resolve_precision(config: FitConfig, chief: bool) -> FitConfig:
    """``config`` with ``training.mixed_precision`` decided (`alexnet_tf.precision.for_run`); the
    chief prints what was chosen and why."""
    recipe, lines = precision.for_run(config.recipe, config.model_dir, config.overwrite, config.strategy == "tpu")
    if chief:
        print("\n".join(lines), flush=True)
    return dataclasses.replace(config, recipe=recipe)


@contextlib.contextmanager
def _precision(recipe: Recipe) -> Iterator[None]:
    """The recipe's Keras mixed-precision policy while building and training; restored after."""
    previous = keras.mixed_precision.global_policy()
    policy = recipe.training.mixed_precision
    keras.mixed_precision.set_global_policy("float32" if policy == "none" else policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


class _Run:
    """One call of `fit`: the objects it builds and the loop over epochs and steps."""

    def __init__(self, config: FitConfig, strategy: tf.distribute.Strategy, chief: bool) -> None:
        self.config = config
        self.recipe = config.recipe
        self.strategy = strategy
        self.chief = chief
        self.towers, self.fc_device = tower_placement(config.strategy, config.fc_device)
        self.model_dir = config.model_dir
        self._temp_dir = None if chief else tempfile.mkdtemp(prefix="alexnet-tf-worker-")
        self._prepare_model_dir()
        seed = self.recipe.training.seed
        self.state = _RunState(secrets.randbits(31) if seed is None else seed)
        self.progress = _Progress()
        self._writer = None
        self._epoch_pipeline: InputPipeline | None = None  # the current epoch's training input
        self.stop = preemption.StopSignals(sum_over_replicas(strategy))  # checked at each step boundary

    # -- Run directory and recipe

    def _path(self, name: str) -> str:
        return posixpath.join(self.model_dir, name)

    def _prepare_model_dir(self) -> None:
        config = self.config
        if config.overwrite and self.chief and tf.io.gfile.exists(self.model_dir):
            runs.clear(self.model_dir)
        runs.record_recipe(
            self.model_dir, self.recipe, allow_change=config.allow_recipe_change or config.overwrite, write=self.chief
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    # -- Building

    def _build(self, pipeline: InputPipeline) -> None:
        recipe = self.recipe
        section = recipe.model
        with self.strategy.scope(), tf.device(self.fc_device):
            network = AlexNet(
                num_classes=pipeline.metadata.num_classes,
                input_size=recipe.input.crop_size,
                two_towers=section.two_towers,
                tower_devices=self.towers,
                local_response_normalization=section.local_response_normalization,
                dropout=section.dropout,
                channel_multiplier=section.channel_multiplier,
                initialization=section.initialization,
                seed=int(self.state.data_seed.numpy()),
            )
            self.dropout_key = use_step_seeds(network)
            self.network = network
            if self.chief:
                runs.write_classes(self.model_dir, pipeline.metadata.classes)
            logits = keras.Model(network.input, network.get_layer("fc8").output, name=f"{network.name}_logits")
            normalization = _view_normalization(pipeline)
            if normalization is None:
                self.model, self.train_model = network, logits
            else:
                self.model = with_view_normalization(network, normalization)
                self.train_model = with_view_normalization(logits, normalization)
            self.schedule = LearningRateSchedule(recipe.schedule, recipe.learning_rate())
            self.optimizer = optim.make_optimizer(
                recipe.optimizer, self.schedule.rate(), recipe.training.mixed_precision == "mixed_float16"
            )
            self.optimizer.build(self.train_model.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(**self._checkpoint_objects())
        directory = self._path(CHECKPOINTS) if self.chief else self._temp_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=self.recipe.training.keep_checkpoints, step_counter=self.state.step
        )

    def _checkpoint_objects(self) -> dict[str, tf.Module]:
        return {
            "model": self.train_model,
            "optimizer": self.optimizer,
            "state": self.state,
            "schedule": self.schedule,
            "progress": self.progress,
        }

    def _restore(self, latest: str | None) -> tuple[int, int] | None:
        """Restores checkpoint ``latest`` (`checkpoints.find_checkpoint`; all workers read the chief's)."""
        if latest is None:
            return None
        objects = self._checkpoint_objects()
        names = tf.train.load_checkpoint(latest).get_variable_to_shape_map()
        if not any(name.startswith("progress/") for name in names):
            del objects["progress"]  # written before `_Progress` existed
        try:
            tf.train.Checkpoint(**objects).restore(latest).assert_consumed()
        except (AssertionError, tf.errors.OpError) as error:
            detail = error.message if isinstance(error, tf.errors.OpError) else str(error)
            first = detail.strip().splitlines()[0][:200]
            raise InputError(
                f"{latest}: the checkpoint does not match this run's model and optimizer ({first}); "
                "was training.mixed_precision, the model or the strategy's model layout changed? "
                "Use the recipe the run was started with, or --overwrite to start again"
            ) from None
        self.optimizer.learning_rate.assign(self.schedule.rate())
        return int(self.state.epoch.numpy()), int(self.state.step.numpy())

    # -- Steps

    def _make_train_step(self) -> Callable[[Any], tuple[tf.Tensor, ...]]:
        recipe = self.recipe
        global_batch = recipe.training.batch_size
        model, optimizer = self.train_model, self.optimizer
        decayed = optim.decayed_variables(model, recipe.optimizer)
        weight_decay = recipe.optimizer.weight_decay

        def gradients(views, labels):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(views, training=True), tf.float32)
                per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                total = loss + optim.l2_loss(decayed, weight_decay) if weight_decay else loss
                scaled = optimizer.scale_loss(total)
            grads = tape.gradient(scaled, model.trainable_variables)
            return grads, loss, _correct(logits, labels)

        if recipe.training.jit_compile:
            gradients = tf.function(gradients, jit_compile=True)

        def replica_step(inputs):
            views, labels = inputs
            grads, loss, (top1, top5) = gradients(views, labels)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss, top1, top5

        @tf.function
        def train_step(iterator):
            self.dropout_key.assign(tf.stack([self.state.data_seed, self.state.step]))  # this step's dropout masks
            with tf.device(self.fc_device):
                results = self.strategy.run(replica_step, args=(next(iterator),))
            return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results)

        return train_step

    def _make_eval_step(self) -> Callable[[Any], tuple[tf.Tensor, ...]]:
        model = self.train_model

        def replica_step(inputs):
            (views, labels), size = padded_if_empty(inputs)
            logits = tf.cast(model(views, training=False), tf.float32)[:size]
            labels = labels[:size]
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            top1, top5 = _correct(logits, labels)
            return tf.reduce_sum(per_example), top1, top5, tf.cast(size, tf.float32)

        @tf.function
        def eval_step(inputs):
            with tf.device(self.fc_device):
                results = self.strategy.run(replica_step, args=(inputs,))
            return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results)

        return eval_step

    # -- The loop

    def train(self) -> FitResult:
        recipe, training = self.recipe, self.recipe.training
        # The pipeline needs the data seed before the checkpoint is restored: read it first.
        found = checkpoints.find_checkpoint(self._path(CHECKPOINTS), repair=self.chief)
        for note in found.notes:
            self._say(note, always=True)
        latest = found.path
        if latest is not None and training.seed is None:
            self.state.data_seed.assign(_read_seed(latest))
        if training.seed is not None:
            keras.utils.set_random_seed(training.seed)
        pipeline = _input_pipeline(
            self.config.data_dir, recipe, int(self.state.data_seed.numpy()), self.config.skip_bad_records
        )
        if (note := pipeline.crop_coverage_note()) is not None:
            self._say(note, always=True)
        self._build(pipeline)
        resumed = self._restore(latest)
        epoch, step = (0, 0) if resumed is None else resumed
        steps_per_epoch = _steps_per_epoch(self.config, pipeline)
        if resumed is not None:
            done = step - epoch * steps_per_epoch
            self._say(
                f"resuming from epoch {epoch} step {step} ({done} of the epoch's {steps_per_epoch} steps done)", True
            )
            if done == 0 and epoch > 0:
                self._complete_epoch_end(epoch)
        self._say(
            f"training {training.epochs} epochs of {steps_per_epoch} steps, global batch {training.batch_size} over "
            f"{self.strategy.num_replicas_in_sync} replica(s) ({self.config.strategy}), lr {self.schedule.rate():g}",
            always=True,
        )
        if self.chief:
            self._writer = tf.summary.create_file_writer(self._path(TENSORBOARD))

        eval_data = distribute_datasets(self.strategy, lambda context: pipeline.eval_dataset(input_context=context))
        train_step, eval_step = self._make_train_step(), self._make_eval_step()
        history = self._read_history(epoch)

        try:
            while epoch < training.epochs:
                iterator = iter(self._epoch_data(epoch, step - epoch * steps_per_epoch))
                row = self._train_epoch(epoch, step, steps_per_epoch, iterator, train_step, pipeline)
                step = (epoch + 1) * steps_per_epoch
                val_loss, val_top1, val_top5 = self._evaluate(eval_data, eval_step)
                rate = float(self.optimizer.learning_rate.numpy())
                row.update(epoch=epoch, lr=rate, val_loss=val_loss, val_top1=val_top1, val_top5=val_top5)
                history.append(row)
                next_rate = self.schedule.end_of_epoch(epoch, 1.0 - val_top1)
                self.optimizer.learning_rate.assign(next_rate)
                epoch += 1
                self.state.epoch.assign(epoch)
                improved = val_top1 > float(self.state.best_val_top1.numpy())
                if improved:
                    self.state.best_val_top1.assign(val_top1)
                    self.progress.best_epoch.assign(epoch - 1)
                self.progress.sums.assign(tf.zeros_like(self.progress.sums))  # the next epoch's, from here
                self._end_of_epoch(row, history, step, improved)
                self._report_skipped(epoch, pipeline)
        except preemption.Stopped as stopped:  # every worker saves (the chief into RUN) and says so
            step = int(self.state.step.numpy())
            self._save_checkpoint(step)
            where = f"saved a checkpoint at step {step}" if self.chief else f"stopped at step {step} with the chief"
            again = (
                "all workers"
                if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
                else "the same command"
            )
            print(f"\n{stopped.reason}: {where}; re-run {again} to resume", file=sys.stderr, flush=True)
            raise
        result = FitResult(
            epochs=epoch,
            steps=int(self.state.step.numpy()),
            best_val_top1=float(self.state.best_val_top1.numpy()),
            history=history,
            model_dir=self.model_dir,
            resumed_from=resumed,
            model=self.model,
        )
        self._say(result.summary(), always=True)
        return result

    def _epoch_data(self, epoch: int, done: int) -> tf.distribute.DistributedDataset:
        """Epoch ``epoch``'s batches, after the ``done`` already trained.

        Each epoch's stream has its own seed (`_epoch_seed`), so a resumed run starts at the
        epoch it was in instead of replaying every earlier epoch's stream; within the epoch the
        batches already trained are skipped before they are decoded.
        """
        seed = _epoch_seed(int(self.state.data_seed.numpy()), epoch)
        pipeline = self._epoch_pipeline = _input_pipeline(
            self.config.data_dir, self.recipe, seed, self.config.skip_bad_records
        )
        if (address := self.recipe.input.data_service) is not None:  # its workers make the batches
            replicas, config = self.strategy.num_replicas_in_sync, self.config
            name = service.job_name(config.model_dir, config.data_dir, epoch, seed, self.recipe, replicas)
            return distribute_datasets(
                self.strategy,
                lambda context: service.distribute(
                    pipeline.train_dataset(service.shared_context(context)), address, name
                ),
            )
        return distribute_datasets(
            self.strategy,
            # A step takes one batch per replica; an input pipeline feeds replicas / pipelines of them.
            lambda context: pipeline.train_dataset(
                context, skip_batches=done * context.num_replicas_in_sync // context.num_input_pipelines
            ),
        )

    def _train_epoch(self, epoch, step, steps_per_epoch, iterator, train_step, pipeline) -> dict[str, float]:
        training = self.recipe.training
        first = step - epoch * steps_per_epoch
        progress = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["lr"]) if self._verbose() else None
        if progress is not None:
            print(f"epoch {epoch + 1}/{training.epochs}")
            progress.update(first)
        # loss × images, top-1 and top-5 hits, images, seconds: carried over a resume in the checkpoint
        sums = self.progress.sums.numpy()
        seconds_before = sums[4]
        start = time.perf_counter()
        rate = float(self.optimizer.learning_rate.numpy())
        for index in range(first, steps_per_epoch):
            loss, top1, top5 = (float(t) for t in train_step(iterator))
            step += 1
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss} at step {step} (epoch {epoch + 1}) with learning rate {rate:g}; training stopped, "
                    f"{self._kept_checkpoint()}: lower optimizer.learning_rate"
                )
            self.state.step.assign(step)
            batch = training.batch_size
            sums += (loss * batch, top1, top5, batch, 0.0)
            sums[4] = seconds_before + time.perf_counter() - start
            self.progress.sums.assign(sums)
            if progress is not None:
                progress.update(index + 1, [("loss", loss), ("top1", top1 / batch), ("lr", rate)])
            if self._writer is not None and step % training.log_every_steps == 0:
                with self._writer.as_default(step=step):
                    _scalar("train/loss", loss)
                    _scalar("train/top1", top1 / batch)
                    _scalar("learning_rate", rate)
            if step % training.checkpoint_every_steps == 0 and index + 1 < steps_per_epoch:
                self._save_checkpoint(step)
            self.stop.check()
            if index == first and self._writer is not None and epoch == 0 and first == 0:
                self._write_inputs(pipeline, step)
        loss, top1, top5, images, seconds = sums
        count = max(images, 1.0)
        return {
            "loss": loss / count,
            "top1": top1 / count,
            "top5": top5 / count,
            "images_per_sec": images / seconds if seconds > 0 else 0.0,
        }

    def _kept_checkpoint(self) -> str:
        latest = self.manager.latest_checkpoint
        if latest is None:
            return "no checkpoint was written yet (a re-run starts from step 0)"
        return f"the last good checkpoint, {posixpath.basename(latest)}, is kept in {self.manager.directory}"

    def _evaluate(self, eval_data, eval_step) -> tuple[float, float, float]:
        totals = np.zeros(4)
        pause_point = f"validation-{int(self.state.step.numpy())}"
        for inputs in eval_data:
            totals += [float(t) for t in eval_step(inputs)]
            _pause_for_tests(pause_point)
            self.stop.check()
        count = max(totals[3], 1.0)
        return totals[0] / count, totals[1] / count, totals[2] / count

    def _end_of_epoch(self, row: dict[str, float], history: list[dict[str, float]], step: int, improved: bool) -> None:
        """History row, then the checkpoint (so a resumed run never lacks a row), then the models."""
        if self.chief:
            runs.write_history(self.model_dir, history)
            with self._writer.as_default(step=step):
                for key in ("loss", "top1", "top5"):
                    _scalar(f"epoch/{key}", row[key])
                    _scalar(f"validation/{key}", row[f"val_{key}"])
                _scalar("epoch/learning_rate", row["lr"])
                _scalar("epoch/images_per_sec", row["images_per_sec"])
                _image("conv1_filters", _filter_grid(self.network))
            self._writer.flush()
        self._save_checkpoint(step)
        if self.chief:
            self._save_model(LAST_MODEL)
            if improved:
                self._save_model(BEST_MODEL)
        self._say(
            f"epoch {int(row['epoch']) + 1}: loss {row['loss']:.4f} top1 {row['top1']:.4f} val_loss "
            f"{row['val_loss']:.4f} val_top1 {row['val_top1']:.4f} val_top5 {row['val_top5']:.4f} lr {row['lr']:g} "
            f"{row['images_per_sec']:.1f} img/s"
        )

    def _report_skipped(self, epoch: int, validation: InputPipeline) -> None:
        """The bad records left out in epoch ``epoch`` (1-based) by its training input and by
        validation (``skip_bad_records``), on the chief even when quiet: never silently."""
        inputs = (("training", self._epoch_pipeline, schema.TRAIN), ("validation", validation, schema.VALIDATION))
        for what, pipeline, split in inputs:
            if pipeline is not None and pipeline.skipped[split].count():
                self._say(f"epoch {epoch}: {pipeline.skipped[split].describe(what)}", always=True)

    def _save_checkpoint(self, step: int) -> None:
        """The checkpoint of global step ``step``. A failure to write it (a full disk) is one line;
        the previous checkpoint is untouched (the new one is written beside it)."""
        with files.output_errors(self.manager.directory):
            self.manager.save(checkpoint_number=step)
        _pause_for_tests(f"checkpoint-{step}")

    def _complete_epoch_end(self, epoch: int) -> None:
        """After restoring the checkpoint at the end of epoch ``epoch``: writes the models of that
        epoch (last.keras, and best.keras if it was the best) from it, as the run that wrote it
        may have stopped before it wrote them (kill -9, a full disk)."""
        if not self.chief:
            return
        names = [LAST_MODEL] + ([BEST_MODEL] if int(self.progress.best_epoch.numpy()) == epoch - 1 else [])
        for name in names:
            self._save_model(name)
        self._say(f"the checkpoint ends epoch {epoch}: wrote {' and '.join(names)} from the checkpoint", True)

    def _save_model(self, name: str) -> None:
        runs.save_model(self.model_dir, name, self.model)

    def _read_history(self, epoch: int) -> list[dict[str, float]]:
        """Rows of the epochs before ``epoch`` (later ones, from after the checkpoint, are dropped)."""
        return [row for row in runs.read_history(self.model_dir) if row["epoch"] < epoch]

    def _write_inputs(self, pipeline: InputPipeline, step: int) -> None:
        """A few augmented training inputs as the network sees them (after `ViewNormalization`)."""
        views, _ = next(iter(pipeline.train_dataset().take(1)))
        normalization = _view_normalization(pipeline)
        images = normalization(views) if normalization is not None else views
        images = tf.cast(images[:SUMMARY_IMAGES], tf.float32)
        low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        with self._writer.as_default(step=step):
            _image("train/inputs", (images - low) / tf.maximum(high - low, 1e-6))

    def _verbose(self) -> bool:
        return self.config.verbose and self.chief

    def _say(self, message: str, always: bool = False) -> None:
        """Prints on the chief: per-epoch lines if verbose; the start, resume and end lines always."""
        if self.chief and (always or self.config.verbose):
            print(message, flush=True)


def _correct(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Numbers of top-1 and top-5 hits in the batch (float32)."""
    labels = tf.cast(labels, tf.int32)
    top1 = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
    k = min(5, logits.shape[-1])
    top5 = tf.reduce_sum(tf.cast(tf.nn.in_top_k(labels, logits, k), tf.float32))
    return top1, top5


def _scalar(name: str, value: float) -> None:
    """A TensorBoard scalar, written with TF's own summary op (the ``tensorboard`` package's
    ``tf.summary.scalar`` is not a dependency)."""
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=_plugin("scalars"))


def _image(name: str, images: tf.Tensor) -> None:
    """TensorBoard images from float ``[n, h, w, 3]`` in [0, 1], as the images plugin stores them."""
    height, width = images.shape[1], images.shape[2]
    encoded = [tf.io.encode_png(tf.cast(tf.round(image * 255), tf.uint8)) for image in images]
    tensor = tf.stack([tf.as_string(width), tf.as_string(height), *encoded])
    tf.summary.write(name, tensor, metadata=_plugin("images"))


def _plugin(name: str) -> bytes:
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = name
    return metadata.SerializeToString()


def _filter_grid(network: keras.Model) -> tf.Tensor:
    """conv1's kernels (both towers) as one ``[1, H, W, 3]`` image, each kernel scaled to [0, 1]."""
    kernels = [layer.kernel for layer in network.layers if layer.name.startswith("conv1") and hasattr(layer, "kernel")]
    kernel = tf.concat([tf.cast(k.value, tf.float32) for k in kernels], axis=-1)  # [h, w, 3, n]
    filters = tf.transpose(kernel, [3, 0, 1, 2])
    low = tf.reduce_min(filters, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(filters, axis=[1, 2, 3], keepdims=True)
    filters = (filters - low) / tf.maximum(high - low, 1e-6)
    count, size = filters.shape[0], filters.shape[1]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    filters = tf.pad(filters, [[0, rows * columns - count], [1, 1], [1, 1], [0, 0]])
    grid = tf.reshape(filters, [rows, columns, size + 2, size + 2, 3])
    grid = tf.reshape(tf.transpose(grid, [0, 2, 1, 3, 4]), [rows * (size + 2), columns * (size + 2), 3])
    return grid[tf.newaxis]


def _pause_for_tests(point: str) -> None:
    """A test hook, inert unless the environment variable `PAUSE_ENV` names ``point``: then fit
    says ``paused at POINT`` on stderr and waits for a line on stdin, so that a fault test can
    kill or interrupt it at that exact moment. Points: ``checkpoint-<step>`` (just after the
    checkpoint of global step N is written) and ``validation-<step>`` (after each validation
    batch of the epoch that ends at global step N)."""
    if os.environ.get(PAUSE_ENV) == point:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        sys.stdin.readline()


def _epoch_seed(data_seed: int, epoch: int) -> int:
    """The input pipeline's seed for one epoch of a run (independent streams per epoch)."""
    return int(np.random.SeedSequence([data_seed, epoch]).generate_state(1, np.uint32)[0])


def _read_seed(checkpoint_path: str) -> int:
    """The data seed stored in a checkpoint, read without building the model."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    for name in reader.get_variable_to_shape_map():
        if name.startswith("state/data_seed"):
            return int(reader.get_tensor(name))
    raise InputError(f"{checkpoint_path}: no data seed in the checkpoint; is it an alexnet-tf fit checkpoint?")
