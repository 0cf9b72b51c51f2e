"""The ``alexnet-tf`` command line: a thin layer over the package's importable functions.

This module imports no TensorFlow, Keras or module that does: each command imports what it needs
when it runs, after the checks that need none (click's flags, a recipe's keys), so ``--help`` and
those errors answer at once. Option defaults come from import-free modules (`alexnet_tf.paper`,
`alexnet_tf.constants`); `tests/test_imports.py` holds it to that.

Why one long file: every command is a few lines of click declarations over one library function,
and all of them share the group's boundary (errors worded with this command's flags, Ctrl-C and
SIGTERM as one line and 130 / 143), which stays in view beside them.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import signal
import sys

import click

from alexnet_tf import errors, paper
from alexnet_tf.constants import (
    DEFAULT_AUGMENT_IMAGES,
    DEFAULT_AUGMENT_LIGHTING_STRENGTH,
    DEFAULT_AUGMENT_VIEWS,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TRAIN_SHARDS,
    DEFAULT_VALIDATION_SHARDS,
    DEFAULT_WORKER_TIMEOUT,
    EVALUATE_PRECISIONS,
    LOCAL_RUNNER,
    MIXED_PRECISION,
    RUNNERS,
    SINGLE_WORKER_STRATEGIES,
    STRATEGIES,
    TRAIN,
    VALIDATION,
    WORKER_TIMEOUT_ENV,
)
from alexnet_tf.errors import InputError
from alexnet_tf.preemption import Stopped
from alexnet_tf.prepare.workers import WorkerError


class _Group(click.Group):
    """The one boundary between the library and the terminal, for every command:

    * bad input becomes click's one-line ``Error: …`` and exit status 1: `InputError`,
      `WorkerError`, and a bad record met while a command reads records (the reading happens deep
      inside `tf.data`, so it is caught here, once: `alexnet_tf.input.bad_records.explain`; fit and
      evaluate explain theirs themselves, naming their --skip-bad-records);
    * the library names parameters, the command line its flags: while a command runs, its
      `_Spelling` words messages and notices (`alexnet_tf.errors`);
    * Ctrl-C and SIGTERM: a command stopped by a signal (`preemption.Stopped`) exits with its
      status, 130 or 143, after its one line (the library's note, or none when whoever stopped
      it said so already: fit's loop); a plain Ctrl-C (fit's second, or one outside any job)
      exits 130, saying so (and, for the commands that resume, that a re-run does).
    """

    def invoke(self, ctx: click.Context):
        with errors.spelling(_Spelling(self, ctx)):
            try:
                return super().invoke(ctx)
            except (InputError, WorkerError) as error:
                raise click.ClickException(errors.message(error)) from None
            except KeyboardInterrupt as interrupt:
                raise SystemExit(_stopped(interrupt, ctx.invoked_subcommand in _RESUMABLE)) from None
            except _op_errors() as error:
                from alexnet_tf.input import bad_records

                explained = bad_records.explain(error)
                if explained is None:
                    raise
                raise click.ClickException(errors.message(explained)) from None


# The commands that continue where they stopped when run again.
_RESUMABLE = frozenset({"prepare-data", "index-records", "fit", "tune", "demo"})


def _stopped(interrupt: KeyboardInterrupt, resumable: bool) -> int:
    """Says in one line on stderr why the command stopped (unless it said so itself) and what a
    re-run does; returns the exit status."""
    if isinstance(interrupt, Stopped):
        if interrupt.note is not None:
            click.echo(f"\n{errors.message(interrupt)}", err=True)
        return interrupt.status
    plain = Stopped(signal.SIGINT)  # before a job took the signals, or fit's second Ctrl-C
    click.echo(f"\n{plain.reason}" + ("; re-run the same command to resume" if resumable else ""), err=True)
    return plain.status


class _Spelling:
    """How the user of the running command spells a library parameter (`alexnet_tf.errors`): its
    flag, or its argument's name (``OUTPUT``); None for one the command does not take.

    The parameter → flag table is the commands' own declarations: each option's destination is
    the library's parameter name (``--skip-bad-records`` sets ``skip_bad_records``, ``--recipe``
    ``recipe_path``), as the config classes' "flags map one to one onto these fields" say.
    """

    def __init__(self, group: click.Group, ctx: click.Context) -> None:
        self._group = group
        self._ctx = ctx

    def __call__(self, name: str, value: object) -> str | None:
        command = self._group.commands.get(self._ctx.invoked_subcommand or "")
        param = next((p for p in command.params if p.name == name), None) if command is not None else None
        if param is None:
            return None
        if isinstance(param, click.Argument):
            return param.human_readable_name if value is errors.NAME_ONLY else str(value)
        flag = next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])
        if value is errors.NAME_ONLY:
            return flag
        if getattr(param, "is_flag", False) and isinstance(value, bool):
            return flag if value else next(iter(param.secondary_opts), None)
        return f"{flag} {shlex.quote(str(value))}"


def _op_errors() -> tuple[type[Exception], ...]:
    """TensorFlow's OpError once TensorFlow is loaded (a bad record is one, explained by
    `alexnet_tf.input.bad_records`); before, nothing can raise it and nothing is caught
    (`except ()`), so that the errors of --help and bad flags, which pass through here too, do
    not import TensorFlow."""
    tf = sys.modules.get("tensorflow")
    return (tf.errors.OpError,) if tf is not None else ()


def _strategy_option(choices: tuple[str, ...] = STRATEGIES, note: str = "multi-worker reads TF_CONFIG"):
    return click.option(
        "--strategy",
        type=click.Choice(choices),
        default="one-device",
        show_default=True,
        help=f"Distribution strategy; the batch is the global batch ({note}).",
    )


_devices_option = click.option(
    "--devices",
    type=click.IntRange(min=1),
    help="Split the CPU into N logical devices (mirrored/two-tower without GPUs).",
)
_fc_device_option = click.option(
    "--fc-device", help="two-tower: device of everything but the towers (default: tower 0's)."
)


def _runner_options(command):
    """prepare-data's and index-records' --runner and --beam-options (`alexnet_tf.prepare.runners`)."""
    command = click.option(
        "--beam-options",
        metavar='"KEY=VALUE,..."',
        help="With --runner beam: Beam's pipeline options, as tfds build's --beam_pipeline_options "
        '(e.g. "direct_num_workers=2,direct_running_mode=multi_processing"; default: the in-process DirectRunner).',
    )(command)
    return click.option(
        "--runner",
        type=click.Choice(RUNNERS),
        default=LOCAL_RUNNER,
        show_default=True,
        help='local: worker processes here; beam: one Apache Beam job (pip install "alexnet-tf[beam]"; '
        "Dataflow, Flink, Spark: docs/prepare-data.md).",
    )(command)


_skip_bad_records_option = click.option(
    "--skip-bad-records",
    is_flag=True,
    help="Leave out records that cannot be read or decoded, naming and counting them, instead of stopping.",
)


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
def summary(
    num_classes: int,
    input_size: int,
    one_tower: bool,
    grouped: bool,
    no_lrn: bool,
    channel_multiplier: float,
    as_json: bool,
) -> None:
    """Print the per-layer table: output shape, units, weights, biases, connections."""
    from alexnet_tf.network.model import AlexNet
    from alexnet_tf.network.summary import summarize

    model = AlexNet(
        num_classes,
        input_size,
        two_towers=not one_tower,
        grouped_convolutions=grouped,
        local_response_normalization=not no_lrn,
        channel_multiplier=channel_multiplier,
    )
    counts = summarize(model)
    click.echo(json.dumps(counts.to_dict(), indent=2) if as_json else counts.to_text())


@main.command("show-augment")
@click.option("--data-dir", required=True, help="prepare-data output directory (local or gs://).")
@click.option("-o", "--output", required=True, help="PNG file to write.")
@click.option("--split", default=TRAIN, show_default=True, help="Split whose first records are shown.")
@click.option(
    "--images",
    default=DEFAULT_AUGMENT_IMAGES,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Records to show.",
)
@click.option(
    "--views",
    default=DEFAULT_AUGMENT_VIEWS,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Training views per record.",
)
@click.option(
    "--lighting-strength",
    default=DEFAULT_AUGMENT_LIGHTING_STRENGTH,
    show_default=True,
    type=click.FloatRange(min=0),
    help="PCA lighting strength in units of the paper's (alpha std 0.1); exaggerated so it is visible.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the views shown.")
def show_augment(
    data_dir: str, output: str, split: str, images: int, views: int, lighting_strength: float, seed: int
) -> None:
    """Write a PNG grid of training views and the ten test crops (§4.1)."""
    from alexnet_tf.input import visualize

    width, height = visualize.write_augment_grid(
        output, data_dir, split=split, images=images, views=views, lighting_strength=lighting_strength, seed=seed
    )
    click.echo(f"wrote {output} ({width}x{height})")
    if lighting_strength != 1:
        click.echo(
            f"the training views' PCA lighting is {lighting_strength:g}x the paper's, to make it visible "
            "(--lighting-strength 1: the paper's own)"
        )


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
    "--image-size", type=int, default=256, show_default=True, help="Side of the stored images (section 2: 256)."
)
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
@_runner_options
def prepare_data(**options) -> None:
    """Convert ImageNet (or folders of images per class) in SOURCE into TFRecord shards in OUTPUT.

    Writes shuffled, balanced train-?????-of-????? and validation-?????-of-????? shards of 256x256
    RGB JPEGs (paper section 2), metadata.json (classes, counts, skipped files, options, the
    training set's mean RGB and RGB PCA) and mean_image.npy. Re-run the same command to resume
    after an interruption.
    """
    from alexnet_tf.prepare.convert import PrepareConfig, prepare_dataset

    report = prepare_dataset(PrepareConfig(**options))
    for note in report.notes:
        click.echo(note)
    click.echo(report.summary())


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--data-dir", required=True, help="prepare-data output directory (local or gs://).")
@click.option("--split", default=VALIDATION, show_default=True, help="Split to score.")
@click.option("--ten-crop", is_flag=True, help="Average the softmax over the paper's ten views (4.1).")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per batch (x10 views)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--per-class-csv", type=click.Path(dir_okay=False), help="Write per-class top-1 accuracy to this CSV.")
@click.option("--confusion-matrix", type=click.Path(dir_okay=False), help="Write the confusion matrix as a PNG.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@_strategy_option()
@_devices_option
@_fc_device_option
@click.option(
    "--precision",
    type=click.Choice(EVALUATE_PRECISIONS),
    default=EVALUATE_PRECISIONS[0],
    show_default=True,
    help="float32: what `export` serves; trained: the run's mixed-precision policy, as fit's validation.",
)
@_skip_bad_records_option
def evaluate(
    models: tuple[str, ...],
    data_dir: str,
    split: str,
    ten_crop: bool,
    batch_size: int,
    as_json: bool,
    per_class_csv: str | None,
    confusion_matrix: str | None,
    progress: bool,
    strategy: str,
    devices: int | None,
    fc_device: str | None,
    precision: str,
    skip_bad_records: bool,
) -> None:
    """Top-1 and top-5 error of MODELS (run directories or .keras files) and of their ensemble.

    Table 2's way: one pass over the split for all models; --ten-crop averages the ten views'
    softmax outputs; two or more models are also scored as an ensemble (their softmax outputs
    averaged).
    """
    from alexnet_tf.evaluate import EvaluateConfig, report_json
    from alexnet_tf.evaluate import evaluate as run_evaluation

    report = run_evaluation(
        EvaluateConfig(
            data_dir,
            tuple(models),
            split=split,
            ten_crop=ten_crop,
            batch_size=batch_size,
            per_class_csv=per_class_csv,
            confusion_matrix=confusion_matrix,
            progress=progress and not as_json,
            strategy=strategy,
            devices=devices,
            fc_device=fc_device,
            precision=precision,
            skip_bad_records=skip_bad_records,
        )
    )
    click.echo(report_json(report) if as_json else report.to_text())
    if report.skipped:
        from alexnet_tf.input import bad_records

        click.echo(bad_records.describe_skipped(report.skipped, split), err=True)


@main.command("export")
@click.argument("source")
@click.option("--export-dir", required=True, help="TF Serving's model base path; the version goes in a subdirectory.")
@click.option("--version", type=click.IntRange(min=0), help="Version number (default: the next integer).")
@click.option("--overwrite", is_flag=True, help="Replace an existing version.")
@click.option("--ten-crop", is_flag=True, help="Average the ten test views (paper section 4.1) instead of the centre.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes listed per image.")
@click.option("--classes", help="classes.json, metadata.json or a directory with one (default: beside the model).")
@click.option("--model-name", default="alexnet", show_default=True, help="TF Serving model name in the warm-up file.")
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="The serving graph refuses larger images before decoding them (GIF: all frames count).",
)
def export(
    source: str,
    export_dir: str,
    version: int | None,
    overwrite: bool,
    ten_crop: bool,
    top_k: int,
    classes: str | None,
    model_name: str,
    max_pixels: int,
) -> None:
    """Export SOURCE (a run directory or a .keras file) as a SavedModel version for TF Serving."""
    from alexnet_tf.serving.export import export_model

    path = export_model(
        source,
        export_dir,
        version=version,
        overwrite=overwrite,
        ten_crop=ten_crop,
        top_k=top_k,
        classes=classes,
        model_name=model_name,
        max_pixels=max_pixels,
    )
    click.echo(f"exported {path}")


@main.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--top-k",
    "--top",
    "top_k",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Classes shown per image.",
)
@click.option("--classes", help="For a run or .keras MODEL: classes.json, metadata.json or a directory with one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    help=f"For a run or .keras MODEL: refuse larger images before decoding them [default: {DEFAULT_MAX_PIXELS}]; "
    "an export keeps the limit it was exported with.",
)
@click.pass_context
def predict(
    ctx: click.Context,
    model: str,
    images: tuple[str, ...],
    top_k: int,
    classes: str | None,
    as_json: bool,
    max_pixels: int | None,
) -> None:
    """Print the top classes of IMAGES by MODEL (an export, a run directory or a .keras file).

    A file that is not an image is reported and skipped; the exit status is then 1.
    """
    import dataclasses

    from alexnet_tf.serving.predict import open_classifier, predict_files

    with open_classifier(model, top_k=top_k, classes=classes, max_pixels=max_pixels) as classifier:
        predictions, failures = predict_files(classifier, images)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(p) for p in predictions], indent=2))
    else:
        for prediction in predictions:
            click.echo(prediction.path)
            for score in prediction.top:
                click.echo(f"  {score.probability:.4f}  {score.wnid}  {score.name}")
    for failure in failures:
        click.echo(f"Error: {failure.path}: {failure.reason}", err=True)
    if failures:
        ctx.exit(1)


@main.command("import-weights")
@click.argument("source")
@click.option("--model-dir", required=True, help="Run directory to write (last.keras, classes.json).")
@click.option(
    "--classes",
    help="Class names: lines 'wnid name' (synset_words.txt, LOC_synset_mapping.txt) or a classes.json / "
    "metadata.json [default: ILSVRC-2012's 1000 classes, shipped with alexnet-tf].",
)
@click.option(
    "--mean",
    help="Caffe's mean: imagenet_mean.binaryproto or ilsvrc_2012_mean.npy [default: per channel, BGR 104, 117, 123].",
)
@click.option(
    "--layout",
    type=click.Choice(["grouped", "towers"]),  # = alexnet_tf.pretrained.convert.LAYOUTS (imports TensorFlow)
    help="Caffe's group: 2 as Conv2D(groups=2), Caffe's exact computation [default], or our two towers "
    "(LRN within each tower; runs under --strategy two-tower).",
)
@click.option("--overwrite", is_flag=True, help="Replace a run already in --model-dir.")
def import_weights(source: str, **options) -> None:
    """Import ImageNet-trained weights from SOURCE into a run directory that evaluate, export and
    predict accept: Caffe's bvlc_alexnet.caffemodel, caffe-tensorflow's .npy of it, or one of our
    .keras files / run directories (docs/interoperability.md)."""
    from alexnet_tf.pretrained.import_weights import import_weights as run_import

    for line in run_import(source, **options).lines():
        click.echo(line)


@main.command()
@click.option("--data-dir", required=True, help="prepare-data output directory (local or gs://).")
@click.option("--model-dir", required=True, help="Run directory: checkpoints, models, history, TensorBoard.")
@click.option(
    "--recipe", "--pipeline", "recipe_path", help="Recipe: a YAML file or a built-in name (default: the paper's)."
)
@_strategy_option()
@_devices_option
@_fc_device_option
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe value.")
@click.option("--epochs", type=int, help="= --set training.epochs=N")
@click.option("--batch-size", type=int, help="= --set training.batch_size=N (the global batch)")
@click.option("--learning-rate", type=float, help="= --set optimizer.learning_rate=X")
@click.option("--mixed-precision", type=click.Choice(MIXED_PRECISION), help="= --set training.mixed_precision=...")
@click.option("--seed", type=int, help="= --set training.seed=N")
@click.option("--data-service", help="= --set input.data_service=grpc://HOST:PORT (a tf.data service dispatcher)")
@click.option("--init-from", help="= --set finetune.init_from=SOURCE: a new run starts from this run dir/.keras.")
@click.option("--freeze", help="= --set finetune.freeze=LAYER: conv1 ... LAYER get no update (e.g. conv5).")
@click.option("--allow-recipe-change", is_flag=True, help="Resume a run although its recipe differs.")
@click.option("--overwrite", is_flag=True, help="Delete the run directory's previous outputs and start again.")
@_skip_bad_records_option
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@click.option(
    "--worker-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help=f"multi-worker: seconds to wait for the other workers to start (default: ${WORKER_TIMEOUT_ENV} or "
    f"{DEFAULT_WORKER_TIMEOUT:g}).",
)
def fit(
    recipe_path,
    overrides,
    epochs,
    batch_size,
    learning_rate,
    mixed_precision,
    seed,
    data_service,
    init_from,
    freeze,
    **options,
) -> None:
    """Train AlexNet on prepared records; re-run the same command to resume.

    Without --recipe this is the paper's recipe (section 5). Writes MODEL_DIR/recipe.yaml,
    checkpoints/, best.keras, last.keras, history.csv and tensorboard/.

    Ctrl-C or SIGTERM (Kubernetes, Slurm, spot VMs): a checkpoint at the next step, then exit
    status 130 (SIGINT) or 143 (SIGTERM); under multi-worker all workers stop at the same step.
    A second Ctrl-C stops at once, without saving.
    """
    from alexnet_tf.recipe import load_recipe

    named = {
        "training.epochs": epochs,
        "training.batch_size": batch_size,
        "optimizer.learning_rate": learning_rate,
        "training.mixed_precision": mixed_precision,
        "training.seed": seed,
        "input.data_service": data_service,
        # JSON strings are YAML strings: a path stays a string whatever it looks like
        "finetune.init_from": None if init_from is None else json.dumps(init_from),
        "finetune.freeze": freeze,
    }
    overrides = list(overrides) + [f"{key}={value}" for key, value in named.items() if value is not None]
    recipe = load_recipe(recipe_path, overrides)
    # TensorFlow loads here, after the recipe's checks, which need none.
    from alexnet_tf.runs import next_steps
    from alexnet_tf.training.cluster import WorkerLost
    from alexnet_tf.training.fit import FitConfig
    from alexnet_tf.training.fit import fit as run_fit
    from alexnet_tf.training.loop import TrainingDiverged

    quiet = options.pop("quiet")
    try:
        result = run_fit(FitConfig(recipe=recipe, verbose=not quiet, **options))
    except (TrainingDiverged, WorkerLost) as error:
        raise click.ClickException(str(error)) from None
    if not quiet:
        export_dir = posixpath.join(posixpath.dirname(result.model_dir.rstrip("/")) or ".", "export")
        click.echo("\n".join(next_steps(options["data_dir"], result.model_dir, export_dir)))


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
@_runner_options
def index_records_command(label_offset: str, **options) -> None:
    """Index existing TFRecords (Model Garden, TF-Slim, TFDS) in RECORDS_DIR so alexnet-tf reads them.

    Finds the train/validation shards, recognises the schema, infers the label offset, counts
    records per class and computes the training statistics (mean image, mean RGB, RGB PCA), then
    writes metadata.json and mean_image.npy. The records are only read, never rewritten or moved.
    Re-run the same command to resume after an interruption. See docs/interoperability.md.
    """
    from alexnet_tf.prepare.index import IndexConfig, index_records

    offset = None if label_offset == "auto" else int(label_offset)
    report = index_records(IndexConfig(label_offset=offset, **options))
    for note in report.notes:
        click.echo(note)
    click.echo(report.summary())


@main.command()
@click.option(
    "--data", type=click.Path(file_okay=False), help="Your own folder-per-class images instead of the synthetic shapes."
)
@click.option("--workdir", default="alexnet-tf-demo", show_default=True, help="Where images/, records/ and run/ go.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a demo recipe value.")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
def demo(data: str | None, workdir: str, overrides: tuple[str, ...], quiet: bool) -> None:
    """Prepare, train and evaluate a small AlexNet in a few minutes, with nothing to download.

    Draws ten synthetic shape classes (or uses --data), runs prepare-data, fits the built-in
    'demo' recipe and evaluates the held-out images (centre crop and ten views). Re-run to resume.
    """
    from alexnet_tf.demo import DemoConfig, run_demo

    report = run_demo(DemoConfig(workdir=workdir, data=data, overrides=overrides, progress=not quiet))
    click.echo(report.summary())


@main.command("show-filters")
@click.argument("run")
@click.option("-o", "--output", required=True, help="PNG file to write.")
def show_filters(run: str, output: str) -> None:
    """Write conv1's kernels of RUN (a run directory or .keras file) as a PNG, one block per tower
    (Figure 3), and print each tower's mean colour saturation (0: grey kernels)."""
    from alexnet_tf.figures.filters import write_filters

    towers, (width, height) = write_filters(run, output)
    for tower in towers:
        click.echo(f"{tower.name}: {len(tower.kernels)} kernels, mean colour saturation {tower.saturation:.3f}")
    click.echo(f"wrote {output} ({width}x{height})")


@main.command()
@click.argument("run")
@click.argument("images", nargs=-1, required=True)
@click.option("--data-dir", required=True, help="prepare-data output whose training images are searched.")
@click.option("-o", "--output", required=True, help="PNG file to write.")
@click.option("-k", "--neighbours", "k", type=click.IntRange(min=1), default=6, show_default=True, help="Per image.")
@click.option("--split", default=TRAIN, show_default=True, help="Split searched.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Records per batch.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def neighbours(run: str, images: tuple[str, ...], data_dir: str, output: str, **options) -> None:
    """Write the training images nearest to IMAGES in RUN's fc7 space (Euclidean, Figure 4) as a PNG."""
    from alexnet_tf.figures.neighbours import write_neighbours

    found, (width, height) = write_neighbours(output, run, data_dir, images, **options)
    for query, labels, distances in zip(found.queries, found.labels, found.distances, strict=True):
        nearest = ", ".join(f"{found.class_names[label]} {d:.3g}" for label, d in zip(labels, distances, strict=True))
        click.echo(f"{query}: {nearest}")
    click.echo(f"wrote {output} ({width}x{height})")


@main.command()
@click.argument("run")
@click.option("-o", "--output", required=True, help="PNG file to write.")
def plot(run: str, output: str) -> None:
    """Write RUN's loss, top-1/top-5 error and learning rate over epochs (RUN/history.csv) as a PNG."""
    from alexnet_tf.figures.curves import write_curves

    width, height = write_curves(run, output)
    click.echo(f"wrote {output} ({width}x{height})")


@main.command()
@click.option("--data-dir", required=True, help="prepare-data output directory (local or gs://).")
@click.option("--tune-dir", required=True, help="The search's directory: settings, keras-tuner state, trial runs.")
@click.option(
    "--recipe", "--pipeline", "recipe_path", help="Base recipe: a YAML file or a built-in name (default: the paper's)."
)
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Fix a base recipe value.")
@click.option("--space", "space_path", help="Search space YAML (section.key: {min, max} or {values}); see docs.")
@click.option(
    "--algorithm", type=click.Choice(["random", "bayesian", "hyperband"]), default="random", show_default=True
)
@click.option("--max-trials", type=click.IntRange(min=1), default=10, show_default=True, help="Trials in all.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Epochs per trial.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the search algorithm.")
@_strategy_option(SINGLE_WORKER_STRATEGIES, "single-worker strategies only: keras-tuner 1.4.8")
@_devices_option
@click.option("--verbose", is_flag=True, help="Each trial's progress bar and per-epoch lines.")
def tune(overrides: tuple[str, ...], **options) -> None:
    """Search hyper-parameters with keras-tuner, each trial a real fit; re-run to resume.

    Ends with a table of the trials and writes TUNE_DIR/best.yaml, the best trial's recipe
    (alexnet-tf fit --recipe TUNE_DIR/best.yaml).
    """
    from alexnet_tf.tuning.search import TuneConfig
    from alexnet_tf.tuning.search import tune as run_tune

    result = run_tune(TuneConfig(overrides=tuple(overrides), **options))
    click.echo(result.table())
    if result.best_recipe_path:
        click.echo(
            f"best: trial {result.best.trial_id}, val_top1 {result.best.val_top1:.4f}; wrote {result.best_recipe_path}"
        )
    else:
        click.echo("no trial finished; nothing written")


@main.group("data-service")
def data_service() -> None:
    """Run the tf.data service that feeds `fit --data-service` (see docs/training.md)."""


@data_service.command("dispatcher")
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="Port to serve on (0: any free one).")
@click.option("--work-dir", help="Journal the state here (local or gs://): a restart with it recovers the jobs.")
def data_service_dispatcher(port: int, work_dir: str | None) -> None:
    """Run a tf.data service dispatcher until SIGTERM or Ctrl-C (exit 143 / 130)."""
    from alexnet_tf.data_service import run_dispatcher

    run_dispatcher(port, work_dir)


@data_service.command("worker")
@click.option("--dispatcher", required=True, help="The dispatcher's address, grpc://HOST:PORT or HOST:PORT.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port (0: any free one).")
@click.option("--host", help="Name trainers reach this worker by [default: this machine's host name].")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help=f"Seconds to wait for the dispatcher (default: ${WORKER_TIMEOUT_ENV} or {DEFAULT_WORKER_TIMEOUT:g}).",
)
def data_service_worker(dispatcher: str, port: int, host: str | None, timeout: float | None) -> None:
    """Run a tf.data service worker until SIGTERM or Ctrl-C (exit 143 / 130)."""
    from alexnet_tf.data_service import run_worker

    run_worker(dispatcher, port, host, timeout)
