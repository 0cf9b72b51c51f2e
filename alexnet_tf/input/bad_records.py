"""Bad records: caught before they are decoded, named in one line, or left out and counted.

What can be wrong with prepared records, and where each is caught:

* **A shard that is truncated or corrupt** (a copy cut short, a bad disk). TensorFlow's record
  reader fails with a ``DataLossError`` that names neither the file nor the record.
  `RecordReader` reads each shard in order, numbers its records, and compares how many it could
  read with the count metadata.json lists: it knows the shard and the first unreadable record.
  (So any read error ends a shard, a transient one on ``gs://`` too: it is reported the same way.)
* **A record whose bytes are not a JPEG** (garbage, a GIF, a PNG), **or a JPEG whose header gives
  another size than the dataset declares** (a 20000² decompression bomb in a 256² dataset).
  `guarded` looks at the first bytes and at the header (``tf.image.extract_jpeg_shape``, which
  reads no pixels) before the decoder touches the image, so nothing oversized is ever decoded.
* **A JPEG whose compressed data is damaged**: only decoding finds it.

By default the first bad record stops the run: an in-graph assertion carries the shard and the
record number (`fail`), and `explain` turns the error into an `InputError`, one line naming the
shard and the record and saying how to repair it. A damaged JPEG is found by the decoder itself,
so its error names the dataset but not the shard.

With a `SkippedRecords` (``skip_bad_records`` of fit and evaluate) the reader also checks every
image itself and decodes it at 1/8 scale, which reads all of its compressed data, and leaves out
every bad record of any of the three kinds, noting it there (once however often it is read) so
that the caller can say how many were left out, and which. Measured: 0.74× the images per
CPU-second of the default input (docs/input-pipeline.md).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import posixpath
import re
import threading
from collections.abc import Iterator

import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.prepare.images import DEFAULT_MAX_PIXELS
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import METADATA_FILENAME, DatasetMetadata

# Keys `RecordReader` adds to a record's parsed features: its shard and its number there.
PATH = "record/path"
INDEX = "record/index"

JPEG_START = b"\xff\xd8\xff"  # SOI and the next marker's first byte
# Problems, as the in-graph checks report them (OK: none).
OK, NOT_JPEG, WRONG_SIZE, TOO_LARGE, UNREADABLE, UNDECODABLE, END = range(7)
_MARKER = "alexnet-tf bad record"
# The assertion's data as TensorFlow prints it, eager or in a tf.data function:
# "[marker] [path, base64] [record] [problem] [a] [b] [c] [d] [first bytes, base64]".
_ASSERTION = re.compile(re.escape(_MARKER) + r"\] \[([\w-]*)\]" + r" \[(-?\d+)\]" * 6 + r" \[([\w-]*)\]")
_FORMATS = {b"GIF8": "a GIF", b"\x89PNG": "a PNG", b"BM": "a BMP", b"RIFF": "a RIFF/WebP file", b"II*\0": "a TIFF"}


@dataclasses.dataclass(frozen=True, order=True)
class BadRecord:
    """``count`` bad records from number ``index`` of the shard at ``path``, and why (path "" and
    index -1: a record decoded without them, as `alexnet_tf.input.decode.RecordDecoder.parse` allows)."""

    path: str
    index: int
    reason: str
    count: int = 1

    def __str__(self) -> str:
        if not self.path:
            return f"a record {self.reason}"
        which = f"record {self.index}" if self.count == 1 else f"records {self.index}-{self.index + self.count - 1}"
        return f"{self.path}: {which} {self.reason}"


def bad_record(path: str, index: int, problem: tuple[int, ...], head: bytes) -> BadRecord:
    """The `BadRecord` for a problem ``[code, a, b, c, d]`` and first bytes as `fail` reports them."""
    code, a, b, c, d = problem
    if code == NOT_JPEG:
        kind = next((name for start, name in _FORMATS.items() if head.startswith(start)), None)
        shown = " ".join(f"{byte:02x}" for byte in head[:4]) or "nothing"
        reason = f"is not a JPEG image ({kind or 'it starts with ' + shown})"
    elif code == WRONG_SIZE:
        reason = f"is a {b}×{a} JPEG where {d}×{c} is declared"
    elif code == TOO_LARGE:
        reason = f"is a {b}×{a} JPEG, more than the {c:,} pixels allowed (a decompression bomb?)"
    elif code == UNREADABLE:  # every record from here to the end of the shard
        return BadRecord(
            path, index, f"cannot be read: the shard is truncated or corrupt ({METADATA_FILENAME} lists {a})", a - index
        )
    else:
        reason = "does not decode (damaged JPEG data, or not a tf.train.Example of the dataset's schema)"
    return BadRecord(path, index, reason)


def fail(path: tf.Tensor, index: tf.Tensor, problem: tf.Tensor, head: tf.Tensor) -> tf.Operation:
    """An assertion that fails with everything `explain` needs to name the record.

    ``problem`` is ``[code, a, b, c, d]`` (int64); ``head`` the image's first bytes. The path goes
    base64-encoded: TensorFlow escapes quotes and non-ASCII characters when it prints strings.
    """
    data = [_MARKER, tf.io.encode_base64(path), tf.cast(index, tf.int64), *tf.unstack(problem, 5)]
    return tf.raw_ops.Assert(condition=False, data=[*data, tf.io.encode_base64(head)], summarize=1)


def max_pixels(metadata: DatasetMetadata) -> int:
    """The most pixels a record of original geometry may have: what prepare-data accepted."""
    limit = metadata.options.get("max_pixels")
    return limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_PIXELS


def image_problem(
    features: dict[str, tf.Tensor], image_size: int | None, most_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[tf.Tensor, tf.Tensor]:
    """``([code, a, b, c, d], first bytes)`` for a parsed record's image, from its first bytes and
    JPEG header only (no pixel is decoded). `NOT_JPEG`; `WRONG_SIZE`: a header size other than
    ``image_size``², or for a dataset of original geometry (``image_size`` None) other than the
    record's own height and width where it states them (``a, b``: the header's height and width,
    ``c, d``: the declared ones); `TOO_LARGE`: original geometry with more than ``most_pixels``
    (``c``); else `OK`."""
    encoded = features[schema.ENCODED]
    head = tf.strings.substr(encoded, 0, 8)
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, len(JPEG_START)), JPEG_START)
    height, width = tf.unstack(
        tf.cond(
            is_jpeg,
            lambda: tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)[:2],
            lambda: tf.zeros([2], tf.int64),
        )
    )
    if image_size is not None:
        declared = tf.constant([image_size, image_size], tf.int64)
        fits = (height == image_size) & (width == image_size)
        code = tf.where(fits, _code(OK), _code(WRONG_SIZE))
    else:
        # Original geometry: the record's own size, where it states one (TFDS records do not).
        zero = tf.constant(0, tf.int64)
        declared = tf.stack([features.get(schema.HEIGHT, zero), features.get(schema.WIDTH, zero)])
        states = (declared[0] > 0) & (declared[1] > 0)
        differs = states & ((height != declared[0]) | (width != declared[1]))
        code = tf.where(differs, _code(WRONG_SIZE), _code(OK))
        too_large = height * width > most_pixels
        code = tf.where(too_large, _code(TOO_LARGE), code)
        declared = tf.where(too_large, tf.constant([most_pixels, 0], tf.int64), declared)
    code = tf.where(is_jpeg, code, _code(NOT_JPEG))
    return tf.stack([code, height, width, declared[0], declared[1]]), head


def guarded(features: dict[str, tf.Tensor], image_size: int | None, most_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """The record's JPEG bytes, released to the decoder only once `image_problem` finds nothing
    wrong; otherwise the assertion of `fail`, naming the record if the features carry `PATH`."""
    problem, head = image_problem(features, image_size, most_pixels)
    path = features.get(PATH, tf.constant(""))
    index = features.get(INDEX, tf.constant(-1, tf.int64))

    def failed() -> tf.Tensor:
        with tf.control_dependencies([fail(path, index, problem, head)]):
            return tf.constant(False)

    checked = tf.cond(tf.equal(problem[0], OK), lambda: tf.constant(True), failed)
    with tf.control_dependencies([checked]):
        return tf.identity(features[schema.ENCODED])


def describe_skipped(records: list[BadRecord], what: str, listed: int = 3) -> str:
    """``"skipped 2 bad training records (P: record 1 is …; Q: record 5 …)"``, naming the first
    ``listed``."""
    count = sum(record.count for record in records)
    names = "; ".join(str(record) for record in records[:listed])
    more = f"; and {len(records) - listed} more" if len(records) > listed else ""
    return f"skipped {count} bad {what} record{'s' if count != 1 else ''} ({names}{more})"


class SkippedRecords:
    """The bad records an input pipeline left out, each noted once (thread-safe: tf.data's threads
    note them through ``tf.py_function``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[tuple[str, int], BadRecord] = {}

    def add(self, record: BadRecord) -> None:
        with self._lock:
            self._found.setdefault((record.path, record.index), record)

    def records(self) -> list[BadRecord]:
        with self._lock:
            return sorted(self._found.values())

    def count(self) -> int:
        """Records left out (a truncated shard's unreadable rest counts every record of it)."""
        return sum(record.count for record in self.records())

    def describe(self, what: str) -> str:
        """`describe_skipped` of the records noted so far."""
        return describe_skipped(self.records(), what)

    def _note(self, path: tf.Tensor, index: tf.Tensor, last: tf.Tensor, problem: tf.Tensor, head: tf.Tensor) -> int:
        """`RecordReader`'s call for a bad record, and for records missing since the ``last``
        one read (their decoding failed)."""
        path, index, last = path.numpy().decode("utf-8", "replace"), int(index), int(last)
        if index > last + 1:
            missing = bad_record(path, last + 1, (UNDECODABLE, 0, 0, 0, 0), b"")
            self.add(dataclasses.replace(missing, count=index - last - 1))
        found = tuple(int(value) for value in problem.numpy())
        if found[0] not in (OK, END):
            self.add(bad_record(path, index, found, head.numpy()))
        return 0


class RecordReader:
    """Reads one shard as ``(path, number, serialized record)``, in order, and checks it ends
    where metadata.json says it does.

    Args:
      record_schema: the records' `alexnet_tf.records.schema` (for ``skipped``'s checks).
      image_size: the dataset's declared image side, None for original geometry.
      most_pixels: the most pixels of an image of original geometry (`max_pixels`).
      skipped: None (strict): a shard that ends early fails (`fail`), and bad images are left to
        the decoder's `guarded`. Else bad records of every kind are left out and noted here.
    """

    def __init__(
        self,
        record_schema: str,
        image_size: int | None,
        most_pixels: int = DEFAULT_MAX_PIXELS,
        skipped: SkippedRecords | None = None,
    ) -> None:
        self.record_schema = record_schema
        self.image_size = image_size
        self.most_pixels = most_pixels
        self.skipped = skipped

    def read(self, path: tf.Tensor, listed: tf.Tensor) -> tf.data.Dataset:
        """The records of the shard at ``path``, which metadata.json says holds ``listed``."""
        # A read error ends the shard (TFRecordDataset moves on to its next file, and there is
        # none); an end marker numbered with the records then says how many were read.
        listed = tf.cast(listed, tf.int64)
        if self.skipped is None:
            return self._read_strict(path, listed)
        records = tf.data.TFRecordDataset(path).ignore_errors().map(lambda record: (record, False))
        marked = records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), True))).enumerate()
        examined = marked.map(lambda index, record: (index, record[0], self._examine(listed, index, *record)))
        # A record whose decoding fails is dropped here, and missed by the next one through.
        examined = examined.ignore_errors().scan(
            tf.constant(-1, tf.int64), lambda last, element: (element[0], (*element, last))
        )

        def note(index: tf.Tensor, record: tf.Tensor, found: tuple[tf.Tensor, tf.Tensor], last: tf.Tensor):
            problem, head = found
            bad = tf.logical_or(tf.logical_not(tf.reduce_any(tf.equal(problem[0], [OK, END]))), index > last + 1)
            noted = tf.cond(
                bad,
                lambda: tf.reshape(
                    tf.py_function(self.skipped._note, [path, index, last, problem, head], tf.int64), []
                ),
                lambda: tf.constant(0, tf.int64),
            )
            # `noted` (always 0) in the flag keeps the note from being pruned from the graph.
            return path, index, record, tf.equal(problem[0], OK) & tf.equal(noted, 0)

        return examined.map(note).filter(lambda path, index, record, ok: ok).map(
            lambda path, index, record, ok: (path, index, record)
        )  # fmt: skip

    def _read_strict(self, path: tf.Tensor, listed: tf.Tensor) -> tf.data.Dataset:
        """`read` with nothing skipped: fails at the end marker if the shard ended before its
        ``listed`` records. Every function stage costs each record of every epoch, so the end
        marker is told apart by its shape (records are scalars, the marker an empty vector) and
        checked in the one filter that drops it (two stages fewer than a flag: a 600-record read
        took 75 ms here instead of 85)."""
        records = tf.data.TFRecordDataset(path).ignore_errors()
        marked = records.concatenate(tf.data.Dataset.from_tensors(tf.constant([], tf.string))).enumerate()

        def is_record(index: tf.Tensor, record: tf.Tensor) -> tf.Tensor:
            end = tf.equal(tf.size(record), 0)

            def failed() -> tf.Tensor:
                problem = tf.stack([tf.constant(UNREADABLE, tf.int64), listed, 0, 0, 0])
                with tf.control_dependencies([fail(path, index, problem, tf.constant(b""))]):
                    return tf.constant(False)

            checked = tf.cond(tf.logical_and(end, index < listed), failed, lambda: tf.constant(True))
            with tf.control_dependencies([checked]):
                return tf.logical_not(end)

        return marked.filter(is_record).map(lambda index, record: (path, index, tf.reshape(record, [])))

    def _examine(self, listed, index, record, end) -> tuple[tf.Tensor, tf.Tensor]:
        """(problem, first bytes) of one record, or of the end marker (`UNREADABLE` if early, else
        `END`); an `OK` record is decoded at 1/8 scale, and fails here if its data is damaged."""

        def at_end() -> tuple[tf.Tensor, tf.Tensor]:
            code = tf.where(index < listed, tf.constant(UNREADABLE, tf.int64), END)
            return tf.stack([code, listed, 0, 0, 0]), tf.constant(b"")

        def of_record() -> tuple[tf.Tensor, tf.Tensor]:
            features = schema.parse_example(record, full=False, record_schema=self.record_schema)
            problem, head = image_problem(features, self.image_size, self.most_pixels)

            def decoded() -> tf.Tensor:
                return tf.shape(tf.io.decode_jpeg(features[schema.ENCODED], channels=3, ratio=8), tf.int64)[0]

            rows = tf.cond(tf.equal(problem[0], OK), decoded, lambda: tf.constant(0, tf.int64))
            with tf.control_dependencies([rows]):
                return tf.identity(problem), head

        return tf.cond(end, at_end, of_record)


def explain(error: tf.errors.OpError, data_dir: str | None = None, skippable: bool = False) -> InputError | None:
    """The one-line `InputError` for a bad record behind ``error`` (None: not a record error).

    ``data_dir`` (the dataset read) makes the repair advice exact; ``skippable``: the caller
    has a ``skip_bad_records`` parameter, the other way out, which the advice names.
    """
    skip = ("skip_bad_records",) if skippable else ()
    found = _ASSERTION.search(error.message)
    if found is not None:
        path = base64.urlsafe_b64decode(_padded(found.group(1))).decode("utf-8", "replace")
        index, *problem = (int(value) for value in found.groups()[1:7])
        record = bad_record(path, index, tuple(problem), base64.urlsafe_b64decode(_padded(found.group(8))))
        return InputError(f"{record}; {_repair(data_dir or posixpath.dirname(path) or None, skippable)}", skip)
    reason = _first_line(error)
    if isinstance(error, tf.errors.DataLossError):
        return InputError(f"a record file is truncated or corrupt ({reason}); {_repair(data_dir, skippable)}", skip)
    if isinstance(error, tf.errors.InvalidArgumentError) and re.search(r"Jpeg|JPEG|ParseExample", error.message):
        where = data_dir or "the dataset"
        name = "; pass `skip_bad_records=True` to leave such records out (each is named)" if skippable else ""
        return InputError(f"a record of {where} does not decode ({reason}){name}; {_repair(data_dir, False)}", skip)
    return None


@contextlib.contextmanager
def explained(data_dir: str, skippable: bool = True) -> Iterator[None]:
    """Turns a bad record met while reading ``data_dir`` into `explain`'s `InputError`."""
    try:
        yield
    except tf.errors.OpError as error:
        found = explain(error, data_dir, skippable)
        if found is None:
            raise
        raise found from None


def _repair(data_dir: str | None, skippable: bool) -> str:
    """How to repair a dataset's bad shard: what wrote it (metadata.json's options) can write it again."""
    options = {}
    if data_dir is not None and tf.io.gfile.exists(posixpath.join(data_dir, METADATA_FILENAME)):
        with contextlib.suppress(InputError):
            options = DatasetMetadata.load(data_dir).options
    if options.get("tool") == "index-records":
        records = options.get("records_dir") or data_dir
        output = f" --output {data_dir}" if records != data_dir else ""
        advice = (
            f"replace the shard with a good copy, then re-run `alexnet-tf index-records {records}{output} --overwrite`"
        )
    elif "source" in options:
        advice = (
            f"re-create the records: re-run prepare-data from {options['source']} into {data_dir} with the options "
            f"in its {METADATA_FILENAME} and --overwrite"
        )
    else:
        advice = "re-create the records (prepare-data with --overwrite)"
    return advice + (", or pass `skip_bad_records=True` to leave bad records out" if skippable else "")


def _first_line(error: tf.errors.OpError) -> str:
    """TensorFlow's message without its function and op decorations: a graph function's error
    starts with "Graph execution error:" and where the node was defined, then says what failed."""
    noise = re.compile(r"\s|\[\[|Graph execution error|Detected at node|<stack traces")
    lines = [line for line in error.message.splitlines() if line and not noise.match(line)]
    line = lines[0] if lines else type(error).__name__
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", line)
    line = re.sub(r"^Error in user-defined function .*?: ", "", line)
    return re.sub(r"\s*\[Op:\w+\].*$", "", line).strip()


def _code(value: int) -> tf.Tensor:
    return tf.constant(value, tf.int64)


def _padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)
