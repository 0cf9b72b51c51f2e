"""The ``alexnet-tf`` command line: a thin layer over the package's importable functions."""

from __future__ import annotations

import json

import click

from alexnet_tf import paper
from alexnet_tf.errors import InputError
from alexnet_tf.input import visualize
from alexnet_tf.prepare.convert import (
    DEFAULT_TRAIN_SHARDS,
    DEFAULT_VALIDATION_SHARDS,
    PrepareConfig,
    prepare_dataset,
)
from alexnet_tf.prepare.images import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS
from alexnet_tf.prepare.index import IndexConfig, index_records
from alexnet_tf.prepare.workers import WorkerError
from alexnet_tf.records import schema


class _Group(click.Group):
    """Turns `InputError` and `WorkerError` into click's one-line ``Error: …`` and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (InputError, WorkerError) as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group)
@click.version_option(package_name="alexnet-tf")
def main() -> None:
    """AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow / Keras 3."""


@main.command()
@click.option("--num-classes", type=int, default=paper.NUM_CLASSES, show_default=True, help="Units of fc8.")
@click.option("--input-size", type=int, default=paper.CROP_SIZE, show_default=True, help="Input side in pixels.")
@click.option("--one-tower", is_flag=True, help="The single-tower variant instead of the paper's two towers.")
@click.option("--grouped", is_flag=True, help="Caffe's layout: Conv2D(groups=2) instead of separate towers.")
@click.option("--no-lrn", is_flag=True, help="Drop the local response normalisation layers.")
@click.option(
    "--channel-multiplier",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiplier on channels and hidden units.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def summary(num_classes: int, input_size: int, one_tower: bool, grouped: bool, no_lrn: bool,
            channel_multiplier: float, as_json: bool) -> None:
    """Print the per-layer table: output shape, units, weights, biases, connections."""
    from alexnet_tf.model import AlexNet
    from alexnet_tf.summary import summarize

    model = AlexNet(
        num_classes, input_size, two_towers=not one_tower, grouped_convolutions=grouped,
        local_response_normalization=not no_lrn, channel_multiplier=channel_multiplier,
    )
    counts = summarize(model)
    click.echo(json.dumps(counts.to_dict(), indent=2) if as_json else counts.to_text())


@main.command("show-augment")
@click.option("--data-dir", required=True, help="prepare-data output directory (local or gs://).")
@click.option("-o", "--output", required=True, help="PNG file to write.")
@click.option("--split", default=schema.TRAIN, show_default=True, help="Split whose first records are shown.")
@click.option(
    "--images", default=visualize.DEFAULT_IMAGES, show_default=True, type=click.IntRange(1, 64), help="Records to show."
)
@click.option(
    "--views",
    default=visualize.DEFAULT_VIEWS,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Training views per record.",
)
@click.option(
    "--lighting-strength",
    default=visualize.DEFAULT_LIGHTING_STRENGTH,
    show_default=True,
    type=click.FloatRange(min=0),
    help="PCA lighting strength in units of the paper's (alpha std 0.1); exaggerated so it is visible.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the views shown.")
def show_augment(
    data_dir: str, output: str, split: str, images: int, views: int, lighting_strength: float, seed: int
) -> None:
    """Write a PNG grid of training views and the ten test crops (§4.1)."""
    width, height = visualize.write_augment_grid(
        output, data_dir, split=split, images=images, views=views, lighting_strength=lighting_strength, seed=seed
    )
    click.echo(f"wrote {output} ({width}x{height})")
@main.command("prepare-data")
@click.argument("source")
@click.argument("output")
@click.option("--train-shards", type=int, default=DEFAULT_TRAIN_SHARDS, show_default=True, help="Training shards.")
@click.option(
    "--validation-shards", type=int, default=DEFAULT_VALIDATION_SHARDS, show_default=True, help="Validation shards."
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.0,
    help="Without a val/ folder: use this fraction of each training class for validation.",
)
@click.option(
    "--val-labels",
    help="Labels for a flat val/ folder: LOC_val_solution.csv, or one wnid per line in file-name order.",
)
@click.option("--synsets", help="Class names, lines 'wnid name' (default: SOURCE/LOC_synset_mapping.txt).")
@click.option("--limit-per-class", type=int, help="At most N files per class and split (a seeded random subset).")
@click.option("--stats-sample", type=int, help="Compute the statistics over N random training images (default: all).")
@click.option("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, show_default=True, help="JPEG quality 1-100.")
@click.option("--keep-geometry", is_flag=True, help="Keep each image's size instead of the 256x256 centre crop.")
@click.option(
    "--label-offset",
    type=click.IntRange(0, 1),
    default=0,
    show_default=True,
    help="0: labels 0..N-1 (sorted classes); 1: Model Garden's 1..N with 0 reserved.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shuffle, splits and subsets.")
@click.option(
    "--max-pixels",
    type=int,
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse larger images (decompression bombs).",
)
@click.option("--workers", type=int, help="Worker processes (default: all available CPUs).")
@click.option("--overwrite", is_flag=True, help="Delete an earlier or different output in OUTPUT and start again.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def prepare_data(**options) -> None:
    """Convert ImageNet (or folders of images per class) in SOURCE into TFRecord shards in OUTPUT.

    Writes shuffled, balanced train-?????-of-????? and validation-?????-of-????? shards of 256x256
    RGB JPEGs (paper section 2), metadata.json (classes, counts, skipped files, options, the
    training set's mean RGB and RGB PCA) and mean_image.npy. Re-run the same command to resume
    after an interruption.
    """
    try:
        report = prepare_dataset(PrepareConfig(**options))
    except KeyboardInterrupt:
        again = "the same command without --overwrite" if options["overwrite"] else "the same command"
        click.echo(f"\nInterrupted: finished shards are kept; re-run {again} to resume.", err=True)
        raise SystemExit(130) from None
    for note in report.notes:
        click.echo(note)
    click.echo(report.summary())


@main.command("index-records")
@click.argument("records_dir")
@click.option("--output", help="Write metadata.json and mean_image.npy here instead of RECORDS_DIR (e.g. read-only).")
@click.option("--stats-sample", type=int, help="Statistics over about N training records (default: all).")
@click.option(
    "--label-offset",
    type=click.Choice(["auto", "0", "1"]),
    default="auto",
    show_default=True,
    help="0: labels 0..N-1 (TFDS, ours); 1: Model Garden / TF-Slim's 1..N with 0 for background; auto infers it.",
)
@click.option("--workers", type=int, help="Worker processes, one shard each at a time (default: all available CPUs).")
@click.option("--overwrite", is_flag=True, help="Replace metadata already in the output (never the records).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def index_records_command(label_offset: str, **options) -> None:
    """Index existing TFRecords (Model Garden, TF-Slim, TFDS) in RECORDS_DIR so alexnet-tf reads them.

    Finds the train/validation shards, recognises the schema, infers the label offset, counts
    records per class and computes the training statistics (mean image, mean RGB, RGB PCA), then
    writes metadata.json and mean_image.npy. The records are only read, never rewritten or moved.
    Re-run the same command to resume after an interruption. See docs/interoperability.md.
    """
    offset = None if label_offset == "auto" else int(label_offset)
    try:
        report = index_records(IndexConfig(label_offset=offset, **options))
    except KeyboardInterrupt:
        click.echo("\nInterrupted: the shards already read are kept; re-run the same command to resume.", err=True)
        raise SystemExit(130) from None
    for note in report.notes:
        click.echo(note)
    click.echo(report.summary())
