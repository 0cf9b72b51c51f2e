"""`fit`: trains AlexNet on prepared records with a recipe, under a `tf.distribute` strategy.

A custom loop rather than ``model.fit``: Keras 3's ``fit`` fails under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), its ``BackupAndRestore`` replays a
resumed epoch from its first batch and ``ReduceLROnPlateau`` forgets its counters on resume.
As in Model Garden, the parts are separate: this module decides the strategy, the precision and
the one `InputPipeline`, and refuses what cannot run before anything is written; the
`alexnet_tf.training.trainer.Trainer` builds the model and optimizer in the strategy's scope and
runs one global step (`strategy.run`, losses summed over replicas); the
`alexnet_tf.training.loop.TrainingLoop` runs the epochs and writes the run directory. The last
line says where the wall time went (`alexnet_tf.training.timings`).

Strategies (``FitConfig.strategy``, `alexnet_tf.training.distribute`): ``one-device``, ``mirrored``,
``multi-worker`` (``TF_CONFIG``), ``tpu`` (not tested here) and ``two-tower``, the paper's model
parallelism (§3.2): tower 0's layers and variables on device 0, tower 1's on device 1 (GPUs, else
logical CPUs), everything else (the fully connected layers, the loss) on ``fc_device``. No data
parallelism with it, and no XLA: XLA ignores ``tf.device`` (tensorflow/tensorflow#124880), so
``jit_compile`` is refused with it.

Fine-tuning: a new run with the recipe's ``finetune.init_from`` starts from that model's weights;
the source is loaded and checked against the recipe at start-up, before anything is written
(`alexnet_tf.training.init_from`); a resumed run restores its checkpoint instead.

The run directory (`alexnet_tf.runs`, its one owner and its one description): the chief writes
the recipe, classes, history, models and TensorBoard there; under ``multi-worker`` the other
workers checkpoint to temporary directories they delete.

Resume: re-running the same command restores the latest checkpoint and continues at its epoch
and step; each epoch's data stream is seeded from the data seed stored in the checkpoint and the
epoch number, so the resumed epoch's stream is the one the interrupted run had, and the batches
of it already trained are skipped before decoding (`InputPipeline.train_dataset`'s
``skip_batches``: the records are read, not decoded). A checkpoint whose objects do not match
this run's (e.g. mixed precision changed, which wraps the optimizer) is refused. The checkpoint
resumed from is the newest that reads back whole (`alexnet_tf.training.checkpoints`: a damaged one is
moved aside, a garbled state file rebuilt). Dropout's masks are a function of (data seed, global
step, replica, layer) (`alexnet_tf.training.dropout_seeds`), and the epoch's running sums are in the
checkpoint, so with ``input.deterministic`` a resumed run ends with the weights and history rows
of an uninterrupted one, bit for bit. Resuming from the checkpoint that ends an epoch writes that
epoch's last.keras (and best.keras, if it was the best) from it again: the checkpoint comes
before them, and a stop in between would leave them stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
from collections.abc import Iterator

import keras
import tensorflow as tf

from alexnet_tf import locks
from alexnet_tf.errors import InputError
from alexnet_tf.input import bad_records, service
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.recipe import Recipe
from alexnet_tf.records import schema
from alexnet_tf.runs import BEST_MODEL, CHECKPOINTS, HISTORY, LAST_MODEL, TENSORBOARD
from alexnet_tf.training import init_from, precision
from alexnet_tf.training.cluster import lost_workers
from alexnet_tf.training.distribute import configure_devices, is_chief, make_strategy
from alexnet_tf.training.loop import TrainingLoop
from alexnet_tf.training.timings import Timings
from alexnet_tf.training.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """One training run.

    Attributes:
      data_dir: prepare-data output (records, metadata.json, mean_image.npy).
      model_dir: the run directory (`alexnet_tf.runs`); created if missing.
      recipe: the resolved recipe (`alexnet_tf.recipe.load_recipe`).
      strategy: one of `alexnet_tf.training.distribute.STRATEGIES`.
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
        (default: ``$ALEXNET_TF_WORKER_TIMEOUT`` or 600; `alexnet_tf.training.cluster`).
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
    timings: Timings  # where this call's wall time went

    def summary(self) -> str:
        return (
            f"trained {self.epochs} epochs ({self.steps} steps); best validation top-1 {self.best_val_top1:.4f}; "
            f"run directory {self.model_dir}: {BEST_MODEL}, {LAST_MODEL}, {HISTORY}, {CHECKPOINTS}/, {TENSORBOARD}/"
        )


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
      WorkerLost: ``multi-worker``: another worker went away (`alexnet_tf.training.cluster`).
    """
    timings = Timings()
    with timings.phase("start-up"):
        configure_devices(config.devices)
        strategy = make_strategy(config.strategy, config.worker_timeout)
        check_combination(config, strategy)
        chief = is_chief(strategy)
        config = _resolve_precision(config, chief)
        pipeline = input_pipeline(config)
        _check_can_start(config, pipeline)
        source = init_from.source_for_new_run(config.recipe, config.model_dir, config.overwrite)
    # One run per run directory; under multi-worker only the chief writes it (`alexnet_tf.locks`).
    with locks.lock_directory(config.model_dir, "fit") if chief else contextlib.nullcontext():
        trainer = Trainer(config.recipe, strategy, pipeline, config.strategy, config.fc_device, config.model_dir)
        loop = TrainingLoop(config, trainer, chief, timings, source)
        try:
            with (
                recipe_precision(config.recipe),
                bad_records.explained(config.data_dir),
                loop.stop,
                lost_workers(strategy, posixpath.join(config.model_dir, CHECKPOINTS)),
            ):
                finished = loop.run()
        finally:
            loop.close()
    timings.stop()
    state = trainer.state
    result = FitResult(
        epochs=int(state.epoch.numpy()),
        steps=int(state.step.numpy()),
        best_val_top1=float(state.best_val_top1.numpy()),
        history=finished.history,
        model_dir=config.model_dir,
        resumed_from=finished.resumed_from,
        model=trainer.built.model,
        timings=timings,
    )
    if chief:
        print(result.summary(), flush=True)
        print(timings.describe(), flush=True)
    return result


def input_pipeline(config: FitConfig) -> InputPipeline:
    """The run's one `InputPipeline`: the recipe's input section, its global batch and precision."""
    recipe = config.recipe
    policy = recipe.training.mixed_precision
    return InputPipeline(
        InputConfig(
            config.data_dir,
            **dataclasses.asdict(recipe.input),
            batch_size=recipe.training.batch_size,
            dtype="float32" if policy == "none" else policy.removeprefix("mixed_"),
            skip_bad_records=config.skip_bad_records,
            seed=0,  # unused: fit gives every training stream its epoch's seed (`Trainer.train_data`)
        )
    )


def check_combination(config: FitConfig, strategy: tf.distribute.Strategy) -> None:
    """Refuses a strategy the recipe cannot train under (two-tower's needs, the batch's split)."""
    recipe = config.recipe
    if config.strategy == "two-tower":
        if not recipe.model.two_towers:
            raise InputError("`strategy='two-tower'` needs model.two_towers=true (one device per tower)", ("strategy",))
        if recipe.training.jit_compile:
            raise InputError(
                "`strategy='two-tower'` with training.jit_compile=true: XLA ignores tf.device placement "
                "(tensorflow/tensorflow#124880); set training.jit_compile=false",
                ("strategy",),
            )
    replicas = strategy.num_replicas_in_sync
    if recipe.training.batch_size % replicas:
        raise InputError(
            f"training.batch_size={recipe.training.batch_size} does not divide over {replicas} replicas: "
            f"use a multiple of {replicas}"
        )


def _check_can_start(config: FitConfig, pipeline: InputPipeline) -> None:
    """Refuses bad data or a recipe that does not fit it before anything is written: a refused run
    must leave no recipe.yaml behind to refuse the corrected command as "a different recipe".
    The pipeline's checks (splits, shards, statistics), without building its datasets, and that
    the training split holds a batch."""
    if pipeline.steps_per_epoch() < 1:
        raise_batch_too_large(config.data_dir, pipeline.num_records(), config.recipe.training.batch_size)
    pipeline.num_records(schema.VALIDATION)  # fit validates every epoch: the split must exist
    pipeline.check_training()
    service.check_can_start(config.recipe, config.skip_bad_records, config.worker_timeout)


def raise_batch_too_large(data_dir: str, train_records: int, batch_size: int) -> None:
    """The one refusal of a global batch larger than the training split (fit and tune)."""
    raise InputError(
        f"{data_dir}: {train_records} training records are fewer than training.batch_size={batch_size}: "
        "use a smaller batch"
    )


def _resolve_precision(config: FitConfig, chief: bool) -> FitConfig:
    """``config`` with ``training.mixed_precision`` decided (`alexnet_tf.training.precision.for_run`); the
    chief prints what was chosen and why."""
    recipe, lines = precision.for_run(config.recipe, config.model_dir, config.overwrite, config.strategy == "tpu")
    if chief:
        print("\n".join(lines), flush=True)
    return dataclasses.replace(config, recipe=recipe)


@contextlib.contextmanager
def recipe_precision(recipe: Recipe) -> Iterator[None]:
    """The recipe's Keras mixed-precision policy while building and training; restored after."""
    previous = keras.mixed_precision.global_policy()
    policy = recipe.training.mixed_precision
    keras.mixed_precision.set_global_policy("float32" if policy == "none" else policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
