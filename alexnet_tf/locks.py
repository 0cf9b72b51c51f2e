"""One process at a time per output directory: a lock file that names its owner.

``fit`` locks its run directory (under ``multi-worker`` only the chief, the one worker that
writes it), ``prepare-data`` and ``index-records`` their output directory, for as long as they
run. A second process on the same directory stops at once with one line naming the owner,
instead of mixing its history, weights or shards with the first one's.

The lock is ``DIR/.alexnet-tf.lock`` (hidden, and matched by no reader's pattern), one JSON
object: the owner's host, pid, process identity (Linux: the boot id and the process's start time
in /proc, so that a pid reused by another process is not taken for the owner), wall-clock start
and command. It is removed when the `lock_directory` block exits, however it exits (return,
error, Ctrl-C); only kill -9, a crash of the interpreter or a power cut leave it behind, and then:

- same host, and the pid no longer runs (or is another process now): the next run takes it over,
  with one warning line naming the dead owner;
- another host: refused with one line naming the owner, since its processes cannot be seen from
  here; the line says to remove the file if you are sure it is not running.

Local disks (a path without ``scheme://``): the file is created with ``O_CREAT | O_EXCL``, which
fails if it exists, atomically (also on NFS v3 and later). Two processes taking over the same
stale lock at once are serialised by an ``flock`` on the stale file: one removes it, and the
other then finds the winner's lock. Pids and flock are local notions: two hosts sharing an NFS
directory see each other's locks, but never take over one another's.

``gs://`` (and the other `tf.io.gfile` file systems): there is no exclusive create (`tf.io.gfile`
has none, and Cloud Storage's generation preconditions are not exposed through it), so the lock
is best effort: refused if a lock of a live owner is there, else written, and read back after
`REMOTE_SETTLE_SECONDS`; a run that finds another's lock in its place stops. A run started while
another one runs is always refused; two started within a moment of each other on a slow link can
both pass (writes that take longer than the settle time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import posixpath
import socket
import time
from collections.abc import Iterator

import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.files import output_errors

LOCK_FILE = ".alexnet-tf.lock"
# On gs://, how long a written lock must stay ours before the run goes on (see the docstring).
REMOTE_SETTLE_SECONDS = 1.0
# A lock just created may still be empty (its owner writes it right after the create): re-read
# for this long before calling it unreadable.
_UNREADABLE_SECONDS = 2.0
_ATTEMPTS = 10

logger = logging.getLogger(__name__)


class DirectoryInUse(InputError):
    """Another process holds (or may hold) the directory's lock; the message names it."""


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who holds a lock: what the lock file says."""

    host: str
    pid: int
    process: str | None  # "<boot id>/<start time in clock ticks>"; None without /proc
    started: str  # wall clock, ISO 8601 with the time zone
    command: str

    def describe(self) -> str:
        return f"alexnet-tf {self.command} (pid {self.pid} on {self.host}, started {self.started})"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Owner | None:
        """The owner a lock file names; None if the text is not a complete lock (being written?)."""
        try:
            owner = cls(**json.loads(text))
        except (ValueError, TypeError):
            return None
        return owner if isinstance(owner.pid, int) and isinstance(owner.host, str) else None


@contextlib.contextmanager
def lock_directory(directory: str, command: str) -> Iterator[None]:
    """Holds ``directory``'s lock (creating the directory) while the block runs; see the module
    docstring.

    Raises:
      DirectoryInUse: another process holds it, or its owner cannot be checked (another host, an
        unreadable lock file); the one-line message names the owner and what to do.
      InputError: the directory or the lock file cannot be written.
    """
    directory = directory.rstrip("/") or "/"
    path = posixpath.join(directory, LOCK_FILE)
    me = Owner(
        host=socket.gethostname(),
        pid=os.getpid(),
        process=_process_identity(os.getpid()),
        started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        command=command,
    )
    with output_errors(directory):
        tf.io.gfile.makedirs(directory)
    _acquire(path, me)
    try:
        yield
    finally:
        _release(path, me)


def _acquire(path: str, me: Owner) -> None:
    local = "://" not in path
    stale = None  # the dead owner whose lock this process removed
    for _ in range(_ATTEMPTS):
        if _create_exclusively(path, me) if local else _create_best_effort(path, me):
            if stale is not None:
                logger.warning("%s: took over the lock of %s, which is no longer running", path, stale.describe())
            return
        owner = _read_owner(path)
        if owner is None:
            continue  # released in the meantime
        _refuse_unless_stale(path, owner)
        if _remove_stale(path, owner, local):
            stale = owner
    raise DirectoryInUse(f"{path}: other processes keep taking this lock; is another run starting in a loop?")


def _create_exclusively(path: str, me: Owner) -> bool:
    """Creates the lock file with ``me`` in it if there is none (O_EXCL); whether it did."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror}; check the output location") from None
    with os.fdopen(fd, "w") as f:
        f.write(me.to_json())
    return True


def _create_best_effort(path: str, me: Owner) -> bool:
    """gs:// and the like: writes the lock if there is none; whether it is still ours after the
    settle time."""
    if tf.io.gfile.exists(path):
        return False
    with output_errors(path), tf.io.gfile.GFile(path, "w") as f:
        f.write(me.to_json())
    time.sleep(REMOTE_SETTLE_SECONDS)
    return _read_owner(path) == me


def _read_owner(path: str) -> Owner | None:
    """The owner named in the lock file; None if there is no file. A file that stays unreadable
    (a crash between its create and its write) raises `DirectoryInUse` saying to remove it."""
    deadline = time.monotonic() + _UNREADABLE_SECONDS
    while True:
        try:
            with tf.io.gfile.GFile(path) as f:
                text = f.read()
        except tf.errors.NotFoundError:
            return None
        owner = Owner.from_json(text)
        if owner is not None:
            return owner
        if time.monotonic() > deadline:
            directory = posixpath.dirname(path)
            raise DirectoryInUse(
                f"{path}: unreadable lock file; if no alexnet-tf process uses {directory}, remove it and re-run"
            )
        time.sleep(0.05)


def _refuse_unless_stale(path: str, owner: Owner) -> None:
    """Raises `DirectoryInUse` unless ``owner`` is a process of this host that no longer runs."""
    directory = posixpath.dirname(path)
    if owner.host != socket.gethostname():
        raise DirectoryInUse(
            f"{directory} is locked by {owner.describe()}, another host: if you are sure it no longer "
            f"runs there, remove {path} and re-run"
        )
    if _running(owner):
        raise DirectoryInUse(
            f"{directory} is in use by {owner.describe()}: wait for it to finish or stop it; two runs "
            "on one directory would mix their outputs"
        )


def _running(owner: Owner) -> bool:
    """Whether ``owner`` (a process of this host) still runs: its pid exists and, where /proc
    tells, is the same process (same boot, same start time)."""
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return owner.process is None or _process_identity(owner.pid) in (None, owner.process)


def _remove_stale(path: str, owner: Owner, local: bool) -> bool:
    """Removes the lock file if it still names ``owner``; whether this process removed it.

    Locally under an exclusive flock of the file, so that of two processes taking over the same
    stale lock only one removes it (the other one's flock fails, or finds another file there).
    """
    if not local:
        with output_errors(path):
            if _read_owner(path) != owner:
                return False
            tf.io.gfile.remove(path)
        return True
    import fcntl  # POSIX only, like the rest of the local branch

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return False
        with open(path) as f:
            if Owner.from_json(f.read()) != owner:
                return False
        os.remove(path)
        return True
    except (BlockingIOError, FileNotFoundError):
        return False  # another process is taking it over, or has
    finally:
        os.close(fd)


def _release(path: str, me: Owner) -> None:
    """Removes the lock if it is still ours (best effort: it may have been removed by hand)."""
    with contextlib.suppress(tf.errors.OpError, OSError, DirectoryInUse):
        if _read_owner(path) == me:
            tf.io.gfile.remove(path)


def _process_identity(pid: int) -> str | None:
    """``"<boot id>/<start time>"`` of process ``pid`` (Linux /proc), None where unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        with open(f"/proc/{pid}/stat") as f:
            # Field 22 is the start time; the command name (field 2) may hold spaces and ")".
            start = f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot}/{start}"
