"""Devices and `tf.distribute` strategies, shared by fit, evaluate and tune.

Strategies (`STRATEGIES`):

* ``one-device``: the first GPU, else the CPU;
* ``mirrored``: data parallel over all local GPUs, or over the logical CPUs (`configure_devices`);
* ``multi-worker``: ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``, once every worker has
  started (`alexnet_tf.training.cluster.wait_for_workers`);
* ``tpu``: ``TPUStrategy`` (``TPU_NAME`` or a local TPU); not tested here;
* ``two-tower``: the paper's model parallelism (§3.2) under the default strategy: tower 0's
  layers on device 0, tower 1's on device 1 (`tower_placement`), the rest on a named device.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import tensorflow as tf

# Defined in the import-free `alexnet_tf.constants` (the command line's choices); named here too.
from alexnet_tf.constants import SINGLE_WORKER_STRATEGIES as SINGLE_WORKER_STRATEGIES
from alexnet_tf.constants import STRATEGIES
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.training import cluster


def configure_devices(devices: int | None) -> None:
    """Splits the first CPU into ``devices`` logical devices (before TensorFlow initialises them)."""
    if devices is None:
        return
    if devices < 1:
        raise invalid("devices", devices, "a positive integer")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == devices:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise InputError(
            f"`devices={devices}`: TensorFlow already initialised {have} CPU device(s) in this process; "
            "set the devices before anything else runs TensorFlow",
            ("devices",),
        ) from None


def make_strategy(name: str, worker_timeout: float | None = None) -> tf.distribute.Strategy:
    """The strategy ``name`` (one of `STRATEGIES`); ``two-tower`` uses the default strategy.

    ``multi-worker`` waits up to ``worker_timeout`` seconds for the other workers to start
    (`alexnet_tf.training.cluster.worker_timeout`: default ``$ALEXNET_TF_WORKER_TIMEOUT`` or 600).
    """
    if name == "multi-worker":  # first: collective ops must be configured before anything lists devices
        _check_tf_config()
        cluster.wait_for_workers(cluster.worker_timeout(worker_timeout))
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise InputError(
                f"`strategy='tpu'`: no TPU reachable ({error}); set TPU_NAME or run on a TPU VM", ("strategy",)
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    if name == "two-tower":
        return tf.distribute.get_strategy()
    raise invalid("strategy", name, f"one of {', '.join(STRATEGIES)}")


def distribute_datasets(
    strategy: tf.distribute.Strategy, dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset]
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """``strategy.distribute_datasets_from_function(dataset_fn)``, except on one CPU device: there
    ``dataset_fn``'s dataset itself (one input pipeline, the global batch), which the step's
    ``strategy.run`` takes as it is.

    Why: tf.distribute feeds devices through a ``MultiDeviceIterator``, whose per-device datasets
    are generator datasets that tf.data re-optimises at every new iterator, logging ``Input of
    GeneratorDatasetOp::Dataset will not be optimized …`` (at most every 30 s; fit makes a new
    iterator per epoch and per validation pass). On one CPU device it only copies from the host
    to the host, so the dataset is used directly and nothing is logged. GPUs keep it (it
    prefetches to the device), and so do the strategies over several devices, which need it.
    """
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        (device,) = strategy.extended.worker_devices
        if tf.DeviceSpec.from_string(device).device_type == "CPU":
            return dataset_fn(tf.distribute.InputContext())
    return strategy.distribute_datasets_from_function(dataset_fn)


def _check_tf_config() -> None:
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise InputError(
            "`strategy='multi-worker'` needs TF_CONFIG (a JSON cluster spec and this worker's task)", ("strategy",)
        )
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        if not isinstance(task["type"], str) or not 0 <= int(task["index"]) < len(cluster[task["type"]]):
            raise ValueError("task index out of range")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"TF_CONFIG does not parse ({error!r}): expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    if workers < 1:
        raise InputError("TF_CONFIG lists no workers: add a cluster.worker list")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: always, except on the non-chief workers of
    ``multi-worker`` (the chief is task ``chief``, else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs
    )


def sum_over_replicas(strategy: tf.distribute.Strategy) -> Callable[[list[float]], list[float]] | None:
    """Under ``multi-worker``: a function summing a short list of floats over all replicas of all
    workers (a collective: every worker must call it at the same points of its loop); None for
    the strategies of one process, where there is nothing to sum."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None

    @tf.function(autograph=False)
    def reduce(values: tf.Tensor) -> tf.Tensor:
        per_replica = strategy.run(tf.identity, args=(values,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return lambda values: reduce(tf.constant(values, tf.float32)).numpy().tolist()


def tower_placement(strategy: str, fc_device: str | None = None) -> tuple[list[str] | None, str | None]:
    """``two-tower``'s devices: one per tower (the first two GPUs, else the first two logical
    CPUs), and the device of everything else (``fc_device``, default tower 0's). Other
    strategies place nothing themselves: ``(None, None)``, and ``fc_device`` is refused."""
    if strategy != "two-tower":
        if fc_device is not None:
            raise InputError(f"`fc_device={fc_device!r}` is for `strategy='two-tower'` only", ("fc_device", "strategy"))
        return None, None
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    devices = gpus if len(gpus) >= 2 else cpus
    if len(devices) < 2:
        raise InputError(
            "`strategy='two-tower'` needs two devices: two GPUs, or `devices=2` to split the CPU into two logical "
            "devices",
            ("strategy", "devices"),
        )
    return devices[:2], fc_device or devices[0]


def padded_if_empty(batch: Any) -> tuple[Any, tf.Tensor]:
    """A replica's share of an evaluation batch (a nest of tensors, examples on axis 0) with one
    row of zeros added if it is empty, and its size before: score the result, keep ``[:size]``.

    Under ``multi-worker`` (and ``mirrored`` with a last batch smaller than the replicas), a
    replica whose share of a finite dataset has run out gets empty batches until every replica is
    done, so that all take part in each step's collectives. The network must not see them: with
    oneDNN (TF 2.21's default on x86 CPUs) ``Conv2D`` on an empty batch returns a tensor shaped
    like its input, not its output (measured here), and the next layer fails. Padding rather than
    a ``tf.cond``: no branch in the step (grappler warns about one); a share that is not empty
    gets zero rows added.
    """
    size = tf.shape(tf.nest.flatten(batch)[0])[0]
    extra = tf.maximum(1 - size, 0)
    return tf.nest.map_structure(lambda t: tf.pad(t, [[0, extra]] + [[0, 0]] * (t.shape.rank - 1)), batch), size
