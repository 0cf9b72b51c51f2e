"""`Trainer`: the model, the optimizer and the steps of one training run, with a public surface.

What Model Garden splits into a Task (build the model, the inputs, the step) and a trainer (run
the step under a strategy) is one small object here, because AlexNet has one task:

* ``Trainer(recipe, strategy, pipeline)`` builds nothing and touches no file;
* `Trainer.build` makes the network from the recipe's model section, the model fit trains (logits,
  with the pipeline's `ViewNormalization` in front when the pipeline yields uint8 views), the
  learning-rate schedule and §5's SGD, in the strategy's scope;
* `Trainer.train_data` / `Trainer.eval_data`: the distributed input of one epoch (its own seed,
  already-trained batches skipped) and of one validation pass, from the one `InputPipeline`;
* `Trainer.train_step` / `Trainer.eval_step`: one global step, summed over the replicas;
* `Trainer.checkpoint_objects` / `Trainer.restore`: what a checkpoint holds.

The loop over epochs, the run directory and everything written to it are `alexnet_tf.training.fit`'s;
`tools/bench_fit.py` times `train_step` through this surface alone.

The step: the loss is averaged over the global batch (`tf.nn.compute_average_loss`), the L2
term scaled per replica (`alexnet_tf.training.optim`), and the dropout masks drawn from (data
seed, global step, replica, layer) (`alexnet_tf.training.dropout_seeds`), so a resumed run draws
the masks the uninterrupted one would have. Fine-tuning (the recipe's ``finetune`` section): the
layers up to ``freeze`` are built non-trainable, and each gradient is scaled by its layer's
``lr_multipliers`` entry before the optimizer (`alexnet_tf.training.optim`); loading another
model's weights is `alexnet_tf.training.init_from`'s, called by the loop for a new run.
The steps are `tf.function`s with autograph off, as the input's functions are (`alexnet_tf.input.pipeline`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.input import service
from alexnet_tf.input.pipeline import InputPipeline
from alexnet_tf.network.layers import with_view_normalization
from alexnet_tf.network.model import AlexNet
from alexnet_tf.recipe import Recipe
from alexnet_tf.records import schema
from alexnet_tf.training import optim
from alexnet_tf.training.distribute import distribute_datasets, padded_if_empty, tower_placement
from alexnet_tf.training.dropout_seeds import use_step_seeds
from alexnet_tf.training.schedule import LearningRateSchedule

# Validation views at most this large stay in memory between epochs (`Trainer.eval_data`).
EVAL_CACHE_BYTES = 1 << 30


class RunState(tf.Module):
    """The counters a checkpoint carries besides the model and optimizer."""

    def __init__(self, seed: int) -> None:
        super().__init__(name="run_state")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")  # epochs finished
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")  # global steps done
        self.data_seed = tf.Variable(seed, dtype=tf.int64, trainable=False, name="data_seed")
        self.best_val_top1 = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_val_top1")


class Progress(tf.Module):
    """What exact resume needs besides `RunState`, the checkpoint's ``progress`` (a checkpoint
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


@dataclasses.dataclass
class Built:
    """What `Trainer.build` makes (all in the strategy's scope)."""

    network: keras.Model  # AlexNet: views in, softmax out
    model: keras.Model  # what the .keras files hold: the network, with ViewNormalization for uint8 views
    train_model: keras.Model  # the same layers with logits out: what is trained and checkpointed
    schedule: LearningRateSchedule
    optimizer: keras.optimizers.Optimizer
    dropout_key: tf.Variable  # [data seed, global step], assigned before each step


class Trainer:
    """The model, optimizer and steps of one run (see the module docstring).

    Args:
      recipe: the run's recipe, with ``training.mixed_precision`` decided (not "auto").
      strategy: the `tf.distribute` strategy the run trains under.
      pipeline: the run's input, built once (`InputPipeline`); its batch is the global batch.
      placement: the strategy's name (`alexnet_tf.constants.STRATEGIES`): ``two-tower`` places the
        towers (`alexnet_tf.training.distribute.tower_placement`).
      fc_device: ``two-tower``: the device of everything but the towers.
      run_id: names this run to a tf.data service (``input.data_service``): its jobs are this
        run's (fit passes the run directory).
    """

    def __init__(
        self,
        recipe: Recipe,
        strategy: tf.distribute.Strategy,
        pipeline: InputPipeline,
        placement: str = "one-device",
        fc_device: str | None = None,
        run_id: str = "",
    ) -> None:
        self.recipe = recipe
        self.run_id = run_id
        self.strategy = strategy
        self.pipeline = pipeline
        self.towers, self.fc_device = tower_placement(placement, fc_device)
        seed = recipe.training.seed
        self.state = RunState(secrets.randbits(31) if seed is None else seed)
        self.progress = Progress()
        self._built: Built | None = None
        self._train_step: Callable[[Any], tuple[tf.Tensor, ...]] | None = None
        self._eval_step: Callable[[Any], tuple[tf.Tensor, ...]] | None = None

    # -- Building

    @property
    def built(self) -> Built:
        """The objects `build` made (`RuntimeError` before it)."""
        if self._built is None:
            raise RuntimeError("Trainer.build() has not been called")
        return self._built

    @property
    def steps_per_epoch(self) -> int:
        """Global steps per epoch: ``training.steps_per_epoch``, else full batches of the split."""
        training = self.recipe.training
        return training.steps_per_epoch or self.pipeline.steps_per_epoch()

    def build(self) -> Built:
        """Makes the network (from the recipe's model section), the model on views, the
        schedule and the optimizer, in the strategy's scope; the recipe's precision policy must
        be the global one while this runs (`alexnet_tf.training.fit` sets it)."""
        recipe = self.recipe
        pipeline = self.pipeline
        with self.strategy.scope(), tf.device(self.fc_device):
            network = AlexNet(
                **dataclasses.asdict(recipe.model),
                num_classes=pipeline.metadata.num_classes,
                input_size=pipeline.config.crop_size,
                tower_devices=self.towers,
                seed=int(self.state.data_seed.numpy()),
            )
            optim.freeze_layers(network, recipe.finetune.freeze)
            dropout_key = use_step_seeds(network)
            logits = keras.Model(network.input, network.get_layer("fc8").output, name=f"{network.name}_logits")
            model, train_model = network, logits
            if pipeline.config.normalize_in_model:
                normalization = pipeline.view_normalization()
                model = with_view_normalization(network, normalization)
                train_model = with_view_normalization(logits, normalization)
            schedule = LearningRateSchedule(recipe.schedule, recipe.learning_rate())
            optimizer = optim.make_optimizer(
                recipe.optimizer, schedule.rate(), recipe.training.mixed_precision == "mixed_float16"
            )
            optimizer.build(train_model.trainable_variables)
        self._built = Built(network, model, train_model, schedule, optimizer, dropout_key)
        self._train_step = self._eval_step = None
        return self._built

    # -- Checkpoints

    def checkpoint_objects(self) -> dict[str, tf.Module]:
        """What fit's checkpoints hold, by name."""
        built = self.built
        return {
            "model": built.train_model,
            "optimizer": built.optimizer,
            "state": self.state,
            "schedule": built.schedule,
            "progress": self.progress,
        }

    def restore(self, path: str) -> tuple[int, int]:
        """Restores checkpoint ``path``; returns its (epochs finished, global step).

        Raises:
          InputError: the checkpoint's objects are not this run's (say mixed precision, which
            wraps the optimizer, or the model changed).
        """
        objects = self.checkpoint_objects()
        names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        if not any(name.startswith("progress/") for name in names):
            del objects["progress"]  # written before `Progress` existed
        try:
            tf.train.Checkpoint(**objects).restore(path).assert_consumed()
        except (AssertionError, tf.errors.OpError) as error:
            detail = error.message if isinstance(error, tf.errors.OpError) else str(error)
            first = detail.strip().splitlines()[0][:200]
            raise InputError(
                f"{path}: the checkpoint does not match this run's model and optimizer ({first}); "
                "was training.mixed_precision, the model or the strategy's model layout changed? "
                "Use the recipe the run was started with, or `overwrite=True` to start again",
                ("overwrite",),
            ) from None
        self.built.optimizer.learning_rate.assign(self.built.schedule.rate())
        return int(self.state.epoch.numpy()), int(self.state.step.numpy())

    # -- Input

    def train_data(
        self, epoch: int, done: int = 0, epochs: int | None = None
    ) -> tf.data.Dataset | tf.distribute.DistributedDataset:
        """The batches of epochs ``epoch`` … ``epochs - 1`` (default: the recipe's
        ``training.epochs``), one after another, after the ``done`` global steps of the first
        already trained: what the loop iterates, with one iterator for the whole run
        (`InputPipeline.train_epochs`).

        Each epoch's stream has its own seed (`epoch_seed` of the run's data seed), so a resumed
        run starts at the epoch it was in instead of replaying every earlier epoch's stream;
        within the epoch the batches already trained are skipped before they are decoded.
        """
        last = self.recipe.training.epochs if epochs is None else epochs
        if self.per_epoch_input:
            if last != epoch + 1:
                raise ValueError("with input.data_service, train_data gives one epoch at a time")
            return self._service_data(epoch)
        data_seed = int(self.state.data_seed.numpy())
        seeds = [epoch_seed(data_seed, number) for number in range(epoch, last)]
        steps = self.steps_per_epoch

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            # A step takes one batch per replica; an input pipeline feeds replicas / pipelines of them.
            replicas, pipelines = context.num_replicas_in_sync, context.num_input_pipelines
            return self.pipeline.train_epochs(
                seeds, steps * replicas // pipelines, context, skip_batches=done * replicas // pipelines
            )

        return distribute_datasets(self.strategy, dataset_fn)

    @property
    def per_epoch_input(self) -> bool:
        """Whether `train_data` gives one epoch at a time (a tf.data service runs the input: one
        job per epoch) rather than the whole run in one dataset."""
        return self.recipe.input.data_service is not None

    def _service_data(self, epoch: int) -> tf.distribute.DistributedDataset:
        """Epoch ``epoch``'s batches made by the tf.data service's workers (`alexnet_tf.input.service`):
        the epoch's seeded dataset, registered as the run's job for that epoch, which a resumed
        trainer re-joins where the service left it (so no batches are skipped here)."""
        seed = epoch_seed(int(self.state.data_seed.numpy()), epoch)
        address = self.recipe.input.data_service
        replicas = self.strategy.num_replicas_in_sync
        name = service.job_name(self.run_id, self.pipeline.config.data_dir, epoch, seed, self.recipe, replicas)
        return distribute_datasets(
            self.strategy,
            lambda context: service.distribute(
                self.pipeline.train_dataset(service.shared_context(context), seed=seed, split_by_file=True),
                address,
                name,
            ),
        )

    def eval_data(self) -> tf.data.Dataset | tf.distribute.DistributedDataset:
        """One pass over the validation split (centre crops), distributed as the training input;
        its views are kept in memory after the first pass when they take at most
        `EVAL_CACHE_BYTES` (users' folders, not ImageNet's 50,000 images), as fit reads it again
        after every epoch."""
        pipeline = self.pipeline
        cache = pipeline.num_records(schema.VALIDATION) * pipeline.view_bytes() <= EVAL_CACHE_BYTES
        return distribute_datasets(
            self.strategy, lambda context: pipeline.eval_dataset(input_context=context, cache=cache)
        )

    # -- Steps

    def train_step(self, iterator: Any) -> tuple[tf.Tensor, ...]:
        """One global step on the next batch of ``iterator`` (of `train_data`), counted in
        ``state.step``: returns the mean loss over the global batch, and its top-1 and top-5 hits
        (summed over the replicas). The step is traced once, on the first call."""
        if self._train_step is None:
            self._train_step = self._make_train_step()
        return self._train_step(iterator)

    def eval_step(self, inputs: Any) -> tuple[tf.Tensor, ...]:
        """Scores one batch of `eval_data`: summed loss, top-1 hits, top-5 hits, examples."""
        if self._eval_step is None:
            self._eval_step = self._make_eval_step()
        return self._eval_step(inputs)

    def _make_train_step(self) -> Callable[[Any], tuple[tf.Tensor, ...]]:
        recipe, built, state = self.recipe, self.built, self.state
        global_batch = recipe.training.batch_size
        model, optimizer = built.train_model, built.optimizer
        decayed = optim.decayed_variables(model, recipe.optimizer)
        scales = optim.update_scales(model.trainable_variables, recipe.finetune.lr_multipliers)
        weight_decay = recipe.optimizer.weight_decay

        def gradients(views, labels):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(views, training=True), tf.float32)
                per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                total = loss + optim.l2_loss(decayed, weight_decay) if weight_decay else loss
                scaled = optimizer.scale_loss(total)
            grads = tape.gradient(scaled, model.trainable_variables)
            return grads, loss, correct(logits, labels)

        if recipe.training.jit_compile:
            gradients = tf.function(gradients, jit_compile=True, autograph=False)

        def replica_step(inputs):
            views, labels = inputs
            grads, loss, (top1, top5) = gradients(views, labels)
            grads = optim.scale_updates(grads, scales)  # finetune.lr_multipliers, as Caffe's lr_mult
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss, top1, top5

        @tf.function(autograph=False)
        def train_step(iterator):
            built.dropout_key.assign(tf.stack([state.data_seed, state.step]))  # this step's dropout masks
            with tf.device(self.fc_device):
                results = self.strategy.run(replica_step, args=(next(iterator),))
            state.step.assign_add(1)  # in the step: an eager assign after it cost ~0.4 ms a step (2 cores)
            return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results)

        return train_step

    def _make_eval_step(self) -> Callable[[Any], tuple[tf.Tensor, ...]]:
        model = self.built.train_model

        def replica_step(inputs):
            (views, labels), size = padded_if_empty(inputs)
            logits = tf.cast(model(views, training=False), tf.float32)[:size]
            labels = labels[:size]
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            top1, top5 = correct(logits, labels)
            return tf.reduce_sum(per_example), top1, top5, tf.cast(size, tf.float32)

        @tf.function(autograph=False)
        def eval_step(inputs):
            with tf.device(self.fc_device):
                results = self.strategy.run(replica_step, args=(inputs,))
            return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results)

        return eval_step


def correct(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Numbers of top-1 and top-5 hits in the batch (float32)."""
    labels = tf.cast(labels, tf.int32)
    top1 = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
    k = min(5, logits.shape[-1])
    top5 = tf.reduce_sum(tf.cast(tf.nn.in_top_k(labels, logits, k), tf.float32))
    return top1, top5


def epoch_seed(data_seed: int, epoch: int) -> int:
    """The input pipeline's seed for one epoch of a run (independent streams per epoch)."""
    return int(np.random.SeedSequence([data_seed, epoch]).generate_state(1, np.uint32)[0])
