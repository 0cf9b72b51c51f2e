"""The loop over epochs around a `Trainer`'s steps, and the run directory it writes (`fit`'s).

Per epoch: the epoch's input (`Trainer.train_data`: its own seed, the batches a resumed run
already trained skipped), the steps (a TensorBoard scalar every ``log_every_steps``, a stop
requested by a signal honoured at each step boundary: `alexnet_tf.preemption`), validation,
then, in this order, the history row, the checkpoint and the ``.keras`` files (`alexnet_tf.runs`
owns their names and formats), so a resumed run never lacks a row. Each phase's time is counted
(`alexnet_tf.training.timings`).

Checkpoints are those of a resumable job (`alexnet_tf.jobs.Job`, as prepare-data's and tune's):
one after ``checkpoint_every_steps`` steps since the last, one at the end of each validated epoch
(``validate_every_epochs``: what a resume would otherwise redo includes a validation pass; an
epoch's end without one saves only when the step count is due), and one when a signal stops the
run (not after an error such as a NaN loss: the last good one is kept). The ``.keras`` files (and
TensorBoard's conv1 image) are written only at an epoch's end that saved a checkpoint, so they are
never ahead of it.

Under ``multi-worker`` every worker runs the loop; only the chief writes the run directory, and
the others checkpoint to a temporary directory they delete.
"""

from __future__ import annotations

import dataclasses
import math
import os
import posixpath
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import files, jobs, preemption, runs
from alexnet_tf.errors import InputError
from alexnet_tf.input.pipeline import InputPipeline
from alexnet_tf.records import schema
from alexnet_tf.runs import BEST_MODEL, CHECKPOINTS, HISTORY, LAST_MODEL, TENSORBOARD
from alexnet_tf.training import checkpoints
from alexnet_tf.training.distribute import sum_over_replicas
from alexnet_tf.training.init_from import Source, initialize, load_source
from alexnet_tf.training.tensorboard import INPUT_IMAGES, TensorBoardWriter
from alexnet_tf.training.timings import FIRST_STEP, STEPS, VALIDATION, Timings
from alexnet_tf.training.trainer import Trainer

if TYPE_CHECKING:
    from alexnet_tf.training.fit import FitConfig

# Test hook: fit stops at the named moment (`_pause_for_tests`) so that a fault test can kill it there.
PAUSE_ENV = "ALEXNET_TF_TEST_PAUSE"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the learning rate."""


@dataclasses.dataclass(frozen=True)
class Finished:
    """What `TrainingLoop.run` leaves besides the trainer's state."""

    history: list[dict[str, float]]
    resumed_from: tuple[int, int] | None


class TrainingLoop:
    """One call of `fit`: prepares the run directory, builds and restores the trainer, and runs
    the epochs (see the module docstring). `close` it after `run`."""

    def __init__(
        self, config: FitConfig, trainer: Trainer, chief: bool, timings: Timings, source: Source | None = None
    ) -> None:
        self.config = config
        self.source = source  # finetune.init_from, loaded and checked (`alexnet_tf.training.init_from`)
        self.timings = timings
        self.trainer = trainer
        self.chief = chief
        self.model_dir = config.model_dir
        self.stop = preemption.StopSignals(sum_over_replicas(trainer.strategy))  # checked at each step boundary
        self._temp_dir: str | None = None
        self._tensorboard: TensorBoardWriter | None = None
        self.manager: tf.train.CheckpointManager | None = None
        self._job: jobs.Job | None = None  # the run's checkpoints (module docstring)
        self._save_error: str | None = None  # why the checkpoint on the way out could not be written
        # The global step of the newest checkpoint, restored or written: the same on every worker
        # (the others' managers write to a directory of their own, so theirs would differ).
        self._saved_step: int | None = None
        self._stepped = False  # a step has run in this call
        # The current epoch's `Progress.sums` (loss × images, top-1 and top-5 hits, images, seconds:
        # carried over a resume in the checkpoint), kept here and written to the variable only for
        # a checkpoint: an eager assign every step cost ~0.15 ms.
        self._sums = np.zeros(5)
        self._last_model_written = time.monotonic()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def _start(self) -> tuple[int, int, tuple[int, int] | None]:
        """Prepares the run directory, builds, restores: (epoch, step, resumed from)."""
        config, trainer = self.config, self.trainer
        if config.overwrite and self.chief and tf.io.gfile.exists(self.model_dir):
            runs.clear(self.model_dir)
        runs.record_recipe(
            self.model_dir,
            config.recipe,
            allow_change=config.allow_recipe_change or config.overwrite,
            write=self.chief,
        )
        found = checkpoints.find_checkpoint(posixpath.join(self.model_dir, CHECKPOINTS), repair=self.chief)
        for note in found.notes:
            self._say(note, always=True)
        if config.recipe.training.seed is not None:
            keras.utils.set_random_seed(config.recipe.training.seed)
        if (note := trainer.pipeline.crop_coverage_note()) is not None:
            self._say(note, always=True)
        built = trainer.build()
        if self.chief:
            runs.write_classes(self.model_dir, trainer.pipeline.metadata.classes)
        # Under multi-worker the other workers checkpoint to a directory of their own, deleted after.
        directory = posixpath.join(self.model_dir, CHECKPOINTS)
        if not self.chief:
            directory = self._temp_dir = tempfile.mkdtemp(prefix="alexnet-tf-worker-")
        self.manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**trainer.checkpoint_objects()),
            directory,
            max_to_keep=config.recipe.training.keep_checkpoints,
            step_counter=trainer.state.step,
        )
        resumed = None if found.path is None else trainer.restore(found.path)
        epoch, step = resumed or (0, 0)
        self._sums = trainer.progress.sums.numpy()
        self._saved_step = None if resumed is None else step
        if (init_from := config.recipe.finetune.init_from) is not None:
            if resumed is not None:
                self._say("resuming: finetune.init_from is not read again (the checkpoint holds the weights)", True)
            else:
                self._say(initialize(built.network, self.source or load_source(init_from, config.recipe)), True)
        steps_per_epoch = trainer.steps_per_epoch
        if resumed is not None:
            done = step - epoch * steps_per_epoch
            self._say(
                f"resuming from epoch {epoch} step {step} ({done} of the epoch's {steps_per_epoch} steps done)", True
            )
            if done == 0 and epoch > 0:
                self._complete_epoch_end(epoch)
        training = config.recipe.training
        self._say(
            f"training {training.epochs} epochs of {steps_per_epoch} steps, global batch {training.batch_size} over "
            f"{trainer.strategy.num_replicas_in_sync} replica(s) ({config.strategy}), lr {built.schedule.rate():g}",
            always=True,
        )
        if self.chief:
            self._tensorboard = TensorBoardWriter(posixpath.join(self.model_dir, TENSORBOARD))
        return epoch, step, resumed

    def run(self) -> Finished:
        trainer, training, timings = self.trainer, self.config.recipe.training, self.timings
        with timings.phase("start-up"):
            epoch, step, resumed = self._start()
            eval_data = trainer.eval_data()
            history = [row for row in runs.read_history(self.model_dir) if row["epoch"] < epoch]
        self._job = jobs.Job(self._save_current, steps=training.checkpoint_every_steps, save_on=(preemption.Stopped,))
        try:
            with self._job:
                self._epochs(epoch, step, eval_data, history)
        except preemption.Stopped as stopped:  # the job saved on the way out: every worker (the chief into RUN)
            step = int(trainer.state.step.numpy())
            if not self.chief:
                where = f"stopped at step {step} with the chief"
            elif self._save_error is None:
                where = f"saved a checkpoint at step {step}"
            else:
                where = f"could not save a checkpoint at step {step} ({self._save_error}); {self._kept_checkpoint()}"
            multi_worker = isinstance(trainer.strategy, tf.distribute.MultiWorkerMirroredStrategy)
            again = "all workers" if multi_worker else "the same command"
            print(f"\n{stopped.reason}: {where}; re-run {again} to resume", file=sys.stderr, flush=True)
            raise
        return Finished(history, resumed)

    def _epochs(self, epoch: int, step: int, eval_data, history: list[dict[str, float]]) -> None:
        """Trains from global ``step`` of epoch ``epoch`` to the end, appending to ``history``."""
        trainer, training, timings = self.trainer, self.config.recipe.training, self.timings
        steps_per_epoch = trainer.steps_per_epoch
        optimizer, schedule = trainer.built.optimizer, trainer.built.schedule
        if epoch < training.epochs and not trainer.per_epoch_input:
            with timings.phase("start-up"):
                iterator = iter(trainer.train_data(epoch, step - epoch * steps_per_epoch))
        while epoch < training.epochs:
            if trainer.per_epoch_input:  # a tf.data service: one job per epoch
                with timings.phase("epoch input"):
                    iterator = iter(trainer.train_data(epoch, epochs=epoch + 1))
            row = self._train_epoch(epoch, step, iterator)
            step = (epoch + 1) * steps_per_epoch
            validated = (epoch + 1) % training.validate_every_epochs == 0 or epoch + 1 == training.epochs
            val_loss = val_top1 = val_top5 = math.nan  # training.validate_every_epochs: not this epoch
            if validated:
                with timings.phase(VALIDATION):
                    val_loss, val_top1, val_top5 = self._evaluate(eval_data)
            rate = float(optimizer.learning_rate.numpy())
            row.update(epoch=epoch, lr=rate, val_loss=val_loss, val_top1=val_top1, val_top5=val_top5)
            history.append(row)
            optimizer.learning_rate.assign(schedule.end_of_epoch(epoch, 1.0 - val_top1 if validated else None))
            epoch += 1
            trainer.state.epoch.assign(epoch)
            improved = validated and val_top1 > float(trainer.state.best_val_top1.numpy())
            if improved:
                trainer.state.best_val_top1.assign(val_top1)
                trainer.progress.best_epoch.assign(epoch - 1)
            self._sums = np.zeros_like(self._sums)  # the next epoch's, from here
            self._end_of_epoch(row, history, step, improved)
            self._report_skipped(epoch)

    def _train_epoch(self, epoch: int, step: int, iterator: Iterator) -> dict[str, float]:
        trainer, training, timings = self.trainer, self.config.recipe.training, self.timings
        steps_per_epoch = trainer.steps_per_epoch
        first = step - epoch * steps_per_epoch
        progress = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["lr"]) if self._verbose() else None
        if progress is not None:
            print(f"epoch {epoch + 1}/{training.epochs}")
            progress.update(first)
        rate = float(trainer.built.optimizer.learning_rate.numpy())
        batch = training.batch_size
        for index in range(first, steps_per_epoch):
            start = time.perf_counter()
            loss, top1, top5 = (float(t) for t in trainer.train_step(iterator))
            seconds = time.perf_counter() - start
            # The call's first step traces and compiles the step: start-up, not training rate.
            timings.add(STEPS if self._stepped else FIRST_STEP, seconds)
            self._stepped = True
            step += 1
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss} at step {step} (epoch {epoch + 1}) with learning rate {rate:g}; training stopped, "
                    f"{self._kept_checkpoint()}: lower optimizer.learning_rate"
                )
            self._sums += (loss * batch, top1, top5, batch, seconds)
            if progress is not None:
                progress.update(index + 1, [("loss", loss), ("top1", top1 / batch), ("lr", rate)])
            with timings.phase(TENSORBOARD):
                if self._tensorboard is not None and step % training.log_every_steps == 0:
                    self._tensorboard.scalars(
                        step, {"train/loss": loss, "train/top1": top1 / batch, "learning_rate": rate}
                    )
                if index == first and self._tensorboard is not None and epoch == 0 and first == 0:
                    self._write_inputs(step)
            if index + 1 < steps_per_epoch:  # the epoch's end saves after validation
                self._job.finished()
            self.stop.check()
        loss, top1, top5, images, seconds = self._sums
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

    def _evaluate(self, eval_data) -> tuple[float, float, float]:
        totals = np.zeros(4)
        pause_point = f"validation-{int(self.trainer.state.step.numpy())}"
        for inputs in eval_data:
            totals += [float(t) for t in self.trainer.eval_step(inputs)]
            _pause_for_tests(pause_point)
            self.stop.check()
        count = max(totals[3], 1.0)
        return totals[0] / count, totals[1] / count, totals[2] / count

    def _end_of_epoch(self, row: dict[str, float], history: list[dict[str, float]], step: int, improved: bool) -> None:
        """History row, then the checkpoint (so a resumed run never lacks a row), then the models
        (module docstring: which epoch ends save)."""
        validated = not math.isnan(row["val_top1"])  # training.validate_every_epochs: nan when not
        if self.chief:
            with self.timings.phase(HISTORY):
                runs.write_history(self.model_dir, history)
        # The epoch's last step was not counted yet (`_train_epoch`): a validated end saves now.
        if validated:
            self._job.save()
        saved = validated or self._job.finished()
        if self.chief:
            scalars = {f"epoch/{key}": row[key] for key in ("loss", "top1", "top5")}
            if validated:
                scalars.update({f"validation/{key}": row[f"val_{key}"] for key in ("loss", "top1", "top5")})
            scalars.update({"epoch/learning_rate": row["lr"], "epoch/images_per_sec": row["images_per_sec"]})
            with self.timings.phase(TENSORBOARD):
                self._tensorboard.scalars(step, scalars)
                if saved:  # conv1's image with the checkpoint and the models
                    self._tensorboard.conv1_filters(step, self.trainer.built.network)
                self._tensorboard.flush()
            if saved:
                if improved:
                    self._save_model(BEST_MODEL)
                every = self.config.recipe.training.last_model_every_seconds
                final = int(self.trainer.state.epoch.numpy()) == self.config.recipe.training.epochs
                if final or time.monotonic() - self._last_model_written >= every:
                    self._save_model(LAST_MODEL, copy_of=BEST_MODEL if improved else None)
        validation = (
            f" val_loss {row['val_loss']:.4f} val_top1 {row['val_top1']:.4f} val_top5 {row['val_top5']:.4f}"
            if validated
            else ""
        )
        self._say(
            f"epoch {int(row['epoch']) + 1}: loss {row['loss']:.4f} top1 {row['top1']:.4f}{validation} "
            f"lr {row['lr']:g} {row['images_per_sec']:.1f} img/s"
        )

    def _report_skipped(self, epoch: int) -> None:
        """The bad records left out so far (``skip_bad_records``), by training and by
        validation, after epoch ``epoch`` (1-based), on the chief even when quiet: never silently."""
        skipped = self.trainer.pipeline.skipped
        for what, split in (("training", schema.TRAIN), ("validation", schema.VALIDATION)):
            if split in skipped and skipped[split].count():
                self._say(f"epoch {epoch}: {skipped[split].describe(what)}", always=True)

    def _save_current(self) -> None:
        """The checkpoint of the current global step (the `jobs.Job`'s save). A failure to write it
        (a full disk) is one line; the previous checkpoint is untouched (the new one is written
        beside it)."""
        step = int(self.trainer.state.step.numpy())
        self._save_error = None
        if step == self._saved_step:
            return  # a stop right after this step's checkpoint: writing it again could only damage it
        self.trainer.progress.sums.assign(self._sums)
        with self.timings.phase(CHECKPOINTS):
            try:
                with files.output_errors(self.manager.directory):
                    self.manager.save(checkpoint_number=step)
            except InputError as error:
                self._save_error = str(error)
                raise
        self._saved_step = step
        _pause_for_tests(f"checkpoint-{step}")

    def _complete_epoch_end(self, epoch: int) -> None:
        """After restoring the checkpoint at the end of epoch ``epoch``: writes the models of that
        epoch (last.keras, and best.keras if it was the best) from it, as the run that wrote it
        may have stopped before it wrote them (kill -9, a full disk)."""
        if not self.chief:
            return
        best = int(self.trainer.progress.best_epoch.numpy()) == epoch - 1
        names = [LAST_MODEL] + ([BEST_MODEL] if best else [])
        for name in names:
            self._save_model(name)
        self._say(f"the checkpoint ends epoch {epoch}: wrote {' and '.join(names)} from the checkpoint", True)

    def _save_model(self, name: str, copy_of: str | None = None) -> None:
        """Writes ``RUN/name``, or copies ``RUN/copy_of`` just written from the same weights."""
        with self.timings.phase(".keras files"):
            if copy_of is None:
                runs.save_model(self.model_dir, name, self.trainer.built.model)
            else:
                runs.copy_model(self.model_dir, copy_of, name)
        if name == LAST_MODEL:
            self._last_model_written = time.monotonic()

    def _write_inputs(self, step: int) -> None:
        """A few augmented training inputs as the network sees them (after `ViewNormalization`),
        from a copy of the run's pipeline that shuffles only that many records: the run's own
        would first fill its whole shuffle buffer (on the demo: 0.4 s instead of 0.5)."""
        pipeline = self.trainer.pipeline
        few = dataclasses.replace(pipeline.config, batch_size=INPUT_IMAGES, shuffle_buffer=INPUT_IMAGES)
        views, _ = next(iter(InputPipeline(few, pipeline.metadata).train_dataset().take(1)))
        if pipeline.config.normalize_in_model:
            views = pipeline.view_normalization()(views)
        self._tensorboard.inputs(step, views)

    def _verbose(self) -> bool:
        return self.config.verbose and self.chief

    def _say(self, message: str, always: bool = False) -> None:
        """Prints on the chief: per-epoch lines if verbose; the start, resume and end lines always."""
        if self.chief and (always or self.config.verbose):
            print(message, flush=True)


def _pause_for_tests(point: str) -> None:
    """A test hook, inert unless the environment variable `PAUSE_ENV` names ``point``: then fit
    says ``paused at POINT`` on stderr and waits for a line on stdin, so that a fault test can
    kill or interrupt it at that exact moment. Points: ``checkpoint-<step>`` (just after the
    checkpoint of global step N is written) and ``validation-<step>`` (after each validation
    batch of the epoch that ends at global step N)."""
    if os.environ.get(PAUSE_ENV) == point:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        sys.stdin.readline()
