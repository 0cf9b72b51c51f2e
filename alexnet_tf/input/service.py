"""Training input from a tf.data service: the trainers' side (``fit --data-service``).

The training pipeline (read, decode the crop, augment, batch: `InputPipeline.train_dataset`) is
registered with a tf.data service dispatcher (`alexnet_tf.data_service` runs it) and runs on its
workers; the trainer only receives batches. Evaluation stays local.

**Processing mode: ``distributed_epoch``** (`PROCESSING_MODE`, TensorFlow's dynamic sharding).
The dispatcher hands the pipeline's shard files to the workers one at a time as each asks for
more, so each pass over the training split reads every record once, across all workers, and a
fast worker takes more files than a slow one. ``parallel_epochs`` (every worker runs the whole
pipeline) does not fit a seeded pipeline: each worker would produce the same stream and the
trainer would get every batch once per worker (measured: two workers, 128 records, 81 distinct
in the first 128 consumed). What the mode does to the paper's epochs and to exact resume is in
docs/training.md ("Input from a tf.data service"); in short:

* each record is read once per pass over the data (at most once if a worker dies holding files);
  an epoch is still ``steps_per_epoch`` global batches, but workers move through the passes at
  their own pace, so an epoch's batches are not exactly one pass;
* every worker runs the same seeded graph, and views are drawn by position in a worker's stream:
  the i-th records of two workers get the same crop, mirror and lighting draws (different
  images, same draws); per image the views are as random as locally;
* order is first come, first served: ``input.deterministic`` is refused with the service;
* resume: a trainer that restarts within an epoch re-joins that epoch's job (`job_name`) and
  continues from where the workers are; the batches trained after the last checkpoint are not
  replayed (locally they would be skipped over exactly).

Under ``multi-worker`` every trainer builds the same dataset (`shared_context`: all files, one
seed) and joins the same job, so the trainers together read each record once per pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import tensorflow as tf

from alexnet_tf import data_service
from alexnet_tf.errors import InputError
from alexnet_tf.recipe import Recipe
from alexnet_tf.training.cluster import worker_timeout

PROCESSING_MODE = tf.data.experimental.service.ShardingPolicy.DYNAMIC  # "distributed_epoch"
KEY = "input.data_service"  # the recipe key; --data-service sets it


def distribute(
    dataset: tf.data.Dataset,
    address: str,
    job_name: str,
    processing_mode: tf.data.experimental.service.ShardingPolicy | str = PROCESSING_MODE,
) -> tf.data.Dataset:
    """``dataset`` produced by the tf.data service at ``address`` (``grpc://HOST:PORT``), in the
    job ``job_name``: every consumer of one job name shares its elements (each gets different
    ones), and a consumer that comes back to a job still running continues it."""
    return dataset.apply(
        tf.data.experimental.service.distribute(processing_mode, data_service.target(address), job_name=job_name)
    )


def job_name(model_dir: str, data_dir: str, epoch: int, seed: int, recipe: Recipe, replicas: int) -> str:
    """The job of one epoch of one run: ``alexnet-tf-<digest>-epoch-<epoch>``.

    The digest covers everything that defines the epoch's dataset (the data and run directories,
    the epoch's seed, the recipe's input section, the batch, its dtype, the replicas) because
    TensorFlow lets a consumer join a job of that name whatever dataset it brings: the same name
    must mean the same data. So a trainer resumed in the same epoch of the same run re-joins the
    job it left (every worker of a multi-worker run joins one), and anything else gets a new one.
    """
    defining = [
        model_dir.rstrip("/"),
        data_dir.rstrip("/"),
        seed,
        dataclasses.asdict(recipe.input),
        recipe.training.batch_size,
        recipe.training.mixed_precision,
        replicas,
    ]
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]
    return f"alexnet-tf-{digest}-epoch-{epoch}"


def shared_context(context: tf.distribute.InputContext) -> tf.distribute.InputContext:
    """The input context of the dataset given to the service: one input pipeline over all files
    (the service shares the work out), batches of one replica, whatever trainer builds it."""
    return tf.distribute.InputContext(num_replicas_in_sync=context.num_replicas_in_sync)


def check_can_start(recipe: Recipe, skip_bad_records: bool, timeout: float | None) -> None:
    """Refuses, in one line, what cannot work with the service, and waits for its dispatcher
    (`alexnet_tf.data_service.wait_for_dispatcher`) up to ``timeout`` seconds
    (`alexnet_tf.training.cluster.worker_timeout`: default ``$ALEXNET_TF_WORKER_TIMEOUT`` or 600); nothing
    without ``input.data_service``."""
    address = recipe.input.data_service
    if address is None:
        return
    if recipe.input.deterministic:
        raise InputError(
            f"{KEY} with input.deterministic=true: the service hands files to its workers first come, first served, "
            "so the order cannot be fixed; set input.deterministic=false"
        )
    if skip_bad_records:
        raise InputError(
            f"--skip-bad-records with {KEY}: the notes of skipped records are Python calls into the trainer, "
            "which the service's workers cannot make; repair the records, or train without the service"
        )
    data_service.wait_for_dispatcher(address, worker_timeout(timeout), "fit", flag=f"--data-service ({KEY})")
