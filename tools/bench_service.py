"""Training input through the tf.data service against the local pipeline, measured in one run.

    python tools/bench_service.py                    # 2,048 synthetic 256×256 records, 1 service worker
    python tools/bench_service.py --workers 2 --data-dir D

Starts a dispatcher and ``--workers`` workers (``alexnet-tf data-service``, each its own process)
on 127.0.0.1, then times ``fit``'s training dataset (`InputPipeline.train_dataset` at the
recipe's defaults: uint8 views, shuffle, batch) read three ways, in alternating rounds:

* **local**: run in this process, as ``fit`` does without ``--data-service``;
* **service**: run by the workers and received here (`alexnet_tf.input.service.distribute`:
  ``distributed_epoch``, a new job each round, elements compressed as tf.data does by default);
* **service, uncompressed**: the same with ``compression=None``.

Reported per way, best (median) of the rounds: images/s (wall clock) and the images per
CPU-second of **this** process, the trainer's side: locally it decodes and augments, through the
service it only receives (and decompresses). On one machine the workers share its cores with
this process, so the service cannot be faster here; what carries over to a fleet is the second
figure. The first line names the host's CPU (`alexnet_tf.training.precision.host_choice`).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import click
import tensorflow as tf
from bench_pipeline import measure  # tools/: the same timing as the pipeline benchmark

from alexnet_tf import data_service, synthetic
from alexnet_tf.input import service
from alexnet_tf.input.pipeline import InputConfig, InputPipeline
from alexnet_tf.training.precision import host_choice

WAYS = ("local", "service", "service, uncompressed")


def start_service(workers: int, scratch: str) -> tuple[str, list[subprocess.Popen]]:
    """A dispatcher and ``workers`` workers on 127.0.0.1; their address and processes."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    address = f"grpc://127.0.0.1:{port}"
    command = [sys.executable, "-m", "alexnet_tf", "data-service"]
    commands = {"dispatcher": [*command, "dispatcher", "--port", str(port)]}
    for index in range(workers):
        commands[f"worker{index}"] = [*command, "worker", "--dispatcher", address, "--host", "127.0.0.1"]
    processes = []
    for name, args in commands.items():
        with open(os.path.join(scratch, f"{name}.err"), "w") as err:  # the process keeps its own copy
            processes.append(subprocess.Popen(args, stderr=err))
    log = os.path.join(scratch, "dispatcher.err")
    deadline = time.monotonic() + 300
    while f"{workers} worker(s)" not in open(log).read():
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise click.ClickException(f"the service did not start; see {scratch}")
        time.sleep(0.2)
    return address, processes


@click.command()
@click.option("--data-dir", help="prepare-data output (default: synthetic records in a temp dir).")
@click.option("--records", default=2048, show_default=True, help="Synthetic training records.")
@click.option("--shards", default=16, show_default=True, help="Synthetic training shards.")
@click.option("--workers", default=1, show_default=True, help="Service workers (processes on this machine).")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--batches", default=15, show_default=True, help="Timed batches per round.")
@click.option("--warmup", default=3, show_default=True, help="Untimed batches per round (fills the buffers).")
@click.option("--rounds", default=5, show_default=True)
def main(
    data_dir: str | None, records: int, shards: int, workers: int, batch_size: int, batches: int, warmup: int,
    rounds: int,
) -> None:  # fmt: skip
    """Images/s and trainer-side images per CPU-second: local pipeline vs the tf.data service."""
    click.echo(f"host: {host_choice().reason}; {len(os.sched_getaffinity(0))} cores")
    with tempfile.TemporaryDirectory() as scratch:
        if data_dir is None:
            data_dir = os.path.join(scratch, "records")
            click.echo(f"writing {records} synthetic 256x256 records in {shards} shards ...")
            synthetic.write_synthetic_dataset(data_dir, train_records=records, train_shards=shards)
        address, processes = start_service(workers, scratch)
        try:
            pipeline = InputPipeline(InputConfig(data_dir, batch_size=batch_size, normalize_in_model=True, seed=0))
            local = lambda: pipeline.train_dataset(tf.distribute.InputContext())  # noqa: E731

            def through_service(compression: str | None, job: str):
                return lambda: local().apply(
                    tf.data.experimental.service.distribute(
                        service.PROCESSING_MODE, data_service.target(address), job_name=job, compression=compression
                    )
                )

            results: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
            for index in range(rounds):
                makers = {
                    "local": local,
                    "service": through_service("AUTO", f"bench-{index}"),
                    "service, uncompressed": through_service(None, f"bench-raw-{index}"),
                }
                for way in WAYS:
                    results[way].append(measure(makers[way], batches, warmup, batch_size))
                click.echo(f"round {index + 1}/{rounds}: " + ", ".join(f"{results[w][-1][0]:,.0f}" for w in WAYS))
        finally:
            for process in processes:
                process.terminate()
                process.wait()

    click.echo(
        f"\n{workers} service worker(s) on this machine; load average {os.getloadavg()[0]:.1f}; {rounds} rounds of "
        f"{batches} batches of {batch_size} uint8 views; best (median) of rounds:"
    )
    click.echo(f"  {'input':<24} {'images/s':>17} {'/ local':>15} {'images/CPU-s here':>19} {'/ local':>15}")
    best = {way: (max(r for r, _ in runs), statistics.median(r for r, _ in runs)) for way, runs in results.items()}
    cpu = {way: (max(c for _, c in runs), statistics.median(c for _, c in runs)) for way, runs in results.items()}
    for way in WAYS:
        (rate, rate_median), (per_cpu, per_cpu_median) = best[way], cpu[way]
        click.echo(
            f"  {way:<24} {rate:>7,.0f} ({rate_median:>7,.0f}) {rate / best['local'][0]:>6.2f} "
            f"({rate_median / best['local'][1]:>6.2f}) {per_cpu:>8,.0f} ({per_cpu_median:>8,.0f}) "
            f"{per_cpu / cpu['local'][0]:>6.2f} ({per_cpu_median / cpu['local'][1]:>6.2f})"
        )


if __name__ == "__main__":
    main()
