"""``alexnet-tf data-service``: the tf.data service's dispatcher and worker processes.

The tf.data service runs an input pipeline on a fleet of CPU machines and streams its batches to
the trainers (`alexnet_tf.input.service` is the trainers' side): one dispatcher, which hands
the registered pipelines' work to the workers, and any number of workers, which run them. Both
are TensorFlow's own servers (``tf.data.experimental.service.DispatchServer`` / ``WorkerServer``);
this module starts them as long-running processes and adds what a process needs around them:

* **Ports.** TensorFlow's gRPC servers bind with ``SO_REUSEPORT``, so a second dispatcher on a
  port already serving starts without complaint and the kernel splits the connections between
  the two (measured here: both start). `check_port_free` binds the port without that option
  first: a port in use by anything is one line. Two processes that check the same port at the
  same instant can both pass (local ports only: it binds on this host).
* **An unreachable dispatcher.** A ``WorkerServer``, and a trainer reading from the service,
  wait for the dispatcher silently and without limit (TensorFlow retries for an hour or more).
  `wait_for_dispatcher` tries its ``host:port`` first, says on stderr that it waits, and after a
  timeout gives up with one line.
* **Shutdown.** ``join()`` blocks in C++, where Python cannot run a signal handler; `serve`
  instead polls, so SIGTERM and Ctrl-C stop the server and the command exits 143 / 130 as
  ``fit`` does (`alexnet_tf.preemption`). A worker's own ``stop()`` can wait an hour for a
  dispatcher that is gone, so a worker ends its process instead (`serve`).
* **Fault tolerance.** A dispatcher with a work directory journals its state there (registered
  pipelines, jobs, which worker has which work) before it answers, and a dispatcher restarted
  with the same directory recovers it: trainers and workers reconnect and carry on. The
  directory is locked while the dispatcher runs (`alexnet_tf.locks`), as two dispatchers on one
  journal would corrupt it.

TensorFlow is imported inside the functions that start servers, so that the command line and the
recipe's check of an address (`is_address`) load none.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from alexnet_tf import preemption
from alexnet_tf.errors import InputError

PROTOCOL = "grpc"
_ADDRESS = re.compile(r"(?:grpc://)?(?P<host>[^\s:/\[\]]+):(?P<port>\d{1,5})")  # a host name or IPv4 address
# How often `serve` looks for a signal and for a change in what it reports, and the wait between
# two reports; how often `wait_for_dispatcher` repeats that it waits.
POLL_SECONDS = 0.2
REPORT_GAP_SECONDS = 1.0
REPORT_EVERY_SECONDS = 30.0


def is_address(text: str) -> bool:
    """Whether ``text`` is a dispatcher's address: ``grpc://HOST:PORT`` or ``HOST:PORT``."""
    match = _ADDRESS.fullmatch(text)
    return match is not None and 0 < int(match["port"]) < 65536


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``(host, port)`` of a dispatcher address (`is_address`); `InputError` naming ``what``
    (the flag or recipe key) otherwise."""
    if not is_address(text):
        raise InputError(
            f"{what} {text!r}: expected a tf.data service dispatcher's address, grpc://HOST:PORT "
            "(e.g. grpc://data-0:5050)"
        )
    match = _ADDRESS.fullmatch(text)
    return match["host"], int(match["port"])


def target(text: str) -> str:
    """The address as TensorFlow takes it: ``grpc://HOST:PORT``."""
    host, port = parse_address(text, "address")
    return f"{PROTOCOL}://{host}:{port}"


def check_port_free(port: int, who: str) -> None:
    """Refuses, in one line, a port another process listens on (see the module docstring)."""
    try:
        with socket.create_server(("", port)):
            pass
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        problem = "the port is in use" if error.errno == errno.EADDRINUSE else "cannot listen on the port"
        raise InputError(
            f"{who}: {problem} ({reason}); is another dispatcher or worker running there? "
            "Choose a free port with --port"
        ) from None


def wait_for_dispatcher(address: str, timeout: float, who: str, flag: str, poll: float = POLL_SECONDS) -> None:
    """Returns once something answers at the dispatcher's ``address`` (given by ``flag``); says
    on stderr that it waits (then every `REPORT_EVERY_SECONDS`).

    Raises:
      InputError: no answer within ``timeout`` seconds (the address is wrong, or the dispatcher
        is not running).
      preemption.Stopped: SIGINT or SIGTERM while waiting.
    """
    from alexnet_tf.training.cluster import _answers  # the one "does host:port accept a connection" check

    host, port = parse_address(address, flag)
    start = time.monotonic()
    reported = None

    def stop(signum: int, frame: Any) -> None:
        _say(f"{who}: {preemption.Stopped(signum).reason} while waiting for the dispatcher at {address}")
        raise preemption.Stopped(signum)

    previous = preemption.installed(stop)
    try:
        while not _answers(f"{host}:{port}"):
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                raise InputError(
                    f"{who}: no tf.data service dispatcher answers at {address} (waited {timeout:g} s); start "
                    f"`alexnet-tf data-service dispatcher --port {port}` on {host}, or correct {flag}"
                )
            if reported is None or elapsed - reported >= REPORT_EVERY_SECONDS:
                _say(f"{who}: waiting for the tf.data service dispatcher at {address} (giving up after {timeout:g} s)")
                reported = elapsed
            time.sleep(poll)
    finally:
        preemption.restore(previous)


def run_dispatcher(port: int, work_dir: str | None = None) -> None:
    """Runs a dispatcher on ``port`` until SIGTERM or Ctrl-C (then raises `preemption.Stopped`).

    With ``work_dir`` (local or ``gs://``) it runs in fault-tolerant mode: its state is journaled
    there and recovered when it is restarted with the same directory, which it holds locked.
    """
    who = f"data-service dispatcher on port {port}"
    if port:
        check_port_free(port, who)
    from alexnet_tf import locks

    with locks.lock_directory(work_dir, "data-service dispatcher") if work_dir else contextlib.nullcontext():
        import tensorflow as tf

        service = tf.data.experimental.service
        config = service.DispatcherConfig(port=port, work_dir=work_dir, fault_tolerant_mode=work_dir is not None)
        server = _started(lambda: service.DispatchServer(config), who)
        bound = int(server._address.rsplit(":", 1)[1])
        state = f"; state in {work_dir} (restart with this --work-dir to recover it)" if work_dir else ""
        _say(f"tf.data service dispatcher at {PROTOCOL}://{socket.gethostname()}:{bound}{state}")
        serve(server, f"data-service dispatcher on port {bound}", lambda: f"{server._num_workers()} worker(s)")


def run_worker(dispatcher: str, port: int = 0, host: str | None = None, timeout: float | None = None) -> None:
    """Runs a worker of the dispatcher at ``dispatcher`` on ``port`` until SIGTERM or Ctrl-C,
    then ends the process with status 143 / 130 (`serve` says why it does not return).

    ``host`` is the name trainers reach this worker by (the dispatcher passes it on to them;
    default: this machine's host name). The dispatcher is waited for up to ``timeout`` seconds
    (`alexnet_tf.training.cluster.worker_timeout`: default ``$ALEXNET_TF_WORKER_TIMEOUT`` or 600).
    """
    who = f"data-service worker on port {port}" if port else "data-service worker"
    dispatcher_host, dispatcher_port = parse_address(dispatcher, "--dispatcher")
    if port:
        check_port_free(port, who)
    from alexnet_tf.training.cluster import worker_timeout  # it loads TensorFlow: after the checks of the flags

    wait_for_dispatcher(dispatcher, worker_timeout(timeout), who, "--dispatcher")
    import tensorflow as tf

    service = tf.data.experimental.service
    address = f"{dispatcher_host}:{dispatcher_port}"
    config = service.WorkerConfig(
        dispatcher_address=address,
        worker_address=f"{host or socket.gethostname()}:%port%",
        port=port,
    )
    server = _started(lambda: service.WorkerServer(config), who)
    bound = int(server._address.rsplit(":", 1)[1])
    _say(f"tf.data service worker at {host or socket.gethostname()}:{bound}, dispatcher {dispatcher}")
    serve(server, f"data-service worker on port {bound}", lambda: f"{server._num_tasks()} task(s)", end_process=True)


def serve(server: Any, who: str, status: Callable[[], str], end_process: bool = False) -> None:
    """Keeps ``server`` running until SIGINT or SIGTERM, saying on stderr what ``status()`` says
    whenever it changes (at most every `REPORT_GAP_SECONDS`); then stops it and raises
    `preemption.Stopped`, or with ``end_process`` ends the process with the status instead.

    A worker is not stopped through TensorFlow but ended that way (``os._exit``):
    ``WorkerServer.stop()`` first finishes the worker's calls in flight, and one to a dispatcher
    that is gone is retried for ``WorkerConfig.dispatcher_timeout_ms`` (an hour), all the while
    holding the GIL, so nothing in Python can bound it (measured: a worker with tasks did not
    stop within minutes, its dispatcher stopped a few seconds after the signal). A worker holds
    nothing to save or release, and to the dispatcher and the trainers its end looks as a stop
    does: its heartbeats and streams end.
    """
    received: list[int] = []
    previous = preemption.installed(lambda signum, frame: received.append(signum))
    try:
        said, said_at = None, -REPORT_GAP_SECONDS
        while not received:
            now = status()
            if now != said and time.monotonic() - said_at >= REPORT_GAP_SECONDS:
                _say(f"{who}: {now}")
                said, said_at = now, time.monotonic()
            time.sleep(POLL_SECONDS)
    finally:
        preemption.restore(previous)
    stopped = preemption.Stopped(received[0])
    if end_process:
        _say(f"{who}: {stopped.reason}; stopped")
        sys.stdout.flush()
        os._exit(stopped.status)
    server.stop()
    _say(f"{who}: {stopped.reason}; stopped")
    raise stopped


def _started(make: Callable[[], Any], who: str) -> Any:
    """``make()``'s server; a server that cannot start (its port taken after all) in one line."""
    try:
        return make()
    except RuntimeError as error:
        raise InputError(f"{who}: {error}; choose a free port with --port") from None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
