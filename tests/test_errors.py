"""The boundary between the library and the terminal (`alexnet_tf.errors`, `alexnet_tf.cli`): the
library's errors name its parameters, never a flag; the command line, and only it, names the flag
that sets each; Ctrl-C and SIGTERM end every command in one place, with 130 or 143."""

from __future__ import annotations

import re
import signal

import pytest
from click.testing import CliRunner

from alexnet_tf import cli, errors, runs
from alexnet_tf.classes import load_classes
from alexnet_tf.cli import main
from alexnet_tf.errors import InputError
from alexnet_tf.preemption import Stopped
from alexnet_tf.prepare.convert import PrepareConfig
from alexnet_tf.prepare.index import IndexConfig
from alexnet_tf.recipe import load_recipe
from alexnet_tf.training import cluster, distribute

FLAG = re.compile(r"(^|\s)--[a-z]")


def _export_version(version):
    from alexnet_tf.serving.export import export_model

    return export_model("model.keras", "export", version=version)


def _tune_strategy(strategy):
    from alexnet_tf.tuning.search import TuneConfig

    return TuneConfig("data", "tune", strategy=strategy)


# (call, a fragment of the message, the parameters it names)
LIBRARY_ERRORS = [
    (lambda _: PrepareConfig("src", "out", jpeg_quality=0),
     "`jpeg_quality` must be in 1..100. Received: jpeg_quality=0", ("jpeg_quality",)),
    (lambda _: IndexConfig("records", workers=0), "`workers` must be at least 1. Received: workers=0", ("workers",)),
    (lambda _: distribute.configure_devices(0), "`devices` must be a positive integer", ("devices",)),
    (lambda _: distribute.tower_placement("mirrored", "/CPU:1"),
     "`fc_device='/CPU:1'` is for `strategy='two-tower'` only", ("fc_device", "strategy")),
    (lambda _: cluster.worker_timeout(0), "`worker_timeout` must be a number of seconds > 0", ("worker_timeout",)),
    (lambda _: _tune_strategy("multi-worker"), "`strategy` must be one of one-device", ("strategy",)),
    (lambda _: _export_version(-1), "`version` must be a non-negative integer", ("version",)),
    (lambda _: load_recipe(None, ["epochs=3"]), "`overrides`: 'epochs=3' is not section.key=value", ("overrides",)),
    (lambda tmp: load_classes(str(tmp / "nope.json")), "no such file; pass `classes` with a classes.json",
     ("classes",)),
    (lambda tmp: _changed_recipe(str(tmp)),
     "(training.epochs: 1 -> 2); re-run with the same recipe, `allow_recipe_change=True` to continue with the new "
     "one, or `overwrite=True` to start again", ("allow_recipe_change", "overwrite")),
]  # fmt: skip


def _changed_recipe(run_dir: str) -> None:
    runs.record_recipe(run_dir, load_recipe(None, ["training.epochs=1"]), allow_change=False, write=True)
    runs.record_recipe(run_dir, load_recipe(None, ["training.epochs=2"]), allow_change=False, write=True)


@pytest.mark.parametrize("call, fragment, parameters", LIBRARY_ERRORS, ids=[case[1][:30] for case in LIBRARY_ERRORS])
def test_library_errors_name_parameters_not_flags(tmp_path, call, fragment, parameters):
    """A Python caller reads the names it passed; no message of the library names a flag."""
    with pytest.raises(InputError) as raised:
        call(tmp_path)
    message = str(raised.value)
    assert fragment in message and not FLAG.search(message), message
    assert raised.value.parameters == parameters


# --- The command line names its flags -------------------------------------------------------------


def spelling(command: str) -> errors.Spelling:
    """The command line's spelling while ``command`` runs."""
    context = main.make_context("alexnet-tf", [command, "--help"], resilient_parsing=True)
    context.invoked_subcommand = command
    return cli._Spelling(main, context)


@pytest.mark.parametrize(
    "command, name, value, spelled",
    [
        ("fit", "skip_bad_records", True, "--skip-bad-records"),
        ("fit", "allow_recipe_change", True, "--allow-recipe-change"),
        ("fit", "overwrite", errors.NAME_ONLY, "--overwrite"),
        ("fit", "model_dir", "runs/a b", "--model-dir 'runs/a b'"),
        ("fit", "recipe_path", "demo", "--recipe demo"),  # the flag, not its old alias --pipeline
        ("fit", "overrides", errors.NAME_ONLY, "--set"),
        ("fit", "input_size", 32, None),  # not fit's: the Python name stays
        ("prepare-data", "output", errors.NAME_ONLY, "OUTPUT"),  # an argument
        ("prepare-data", "progress", False, "--no-progress"),
        ("prepare-data", "jpeg_quality", 0, "--jpeg-quality 0"),
        ("show-augment", "output", errors.NAME_ONLY, "--output"),  # the long name of -o/--output
        ("demo", "overwrite", True, None),
    ],
)
def test_each_command_spells_a_parameter_as_its_own_flag(command, name, value, spelled):
    assert spelling(command)(name, value) == spelled


def test_the_command_line_words_messages_and_notices_with_its_flags(tmp_path):
    with pytest.raises(InputError) as refused:
        _changed_recipe(str(tmp_path))
    with errors.spelling(spelling("fit")):
        assert errors.message(refused.value).endswith(
            "(training.epochs: 1 -> 2); re-run with the same recipe, --allow-recipe-change to continue with the new "
            "one, or --overwrite to start again"
        )
        invalid = errors.invalid("jpeg_quality", 0, "in 1..100")  # not fit's: Keras' wording stays
        assert errors.message(invalid) == str(invalid) == "`jpeg_quality` must be in 1..100. Received: jpeg_quality=0"
        assert errors.worded("`overwrite=True` restarts", ["overwrite"]) == "--overwrite restarts"
    with errors.spelling(spelling("prepare-data")):
        assert errors.message(invalid) == "--jpeg-quality 0: must be in 1..100"
    assert errors.worded("`overwrite=True` restarts", ["overwrite"]) == "`overwrite=True` restarts"  # Python


def test_a_cli_error_names_the_flags_the_user_typed(tmp_path):
    (tmp_path / "export" / "1").mkdir(parents=True)
    export = str(tmp_path / "export")
    result = CliRunner().invoke(main, ["export", "model.keras", "--export-dir", export, "--version", "1"])
    assert result.exit_code == 1
    assert (
        result.output
        == f"Error: {export}/1 exists; pass --overwrite to replace it, or omit --version for the next one\n"
    )


# --- Ctrl-C and SIGTERM: one place ----------------------------------------------------------------


@pytest.mark.parametrize(
    "command, run", [("demo", "alexnet_tf.demo.run_demo"), ("tune", "alexnet_tf.tuning.search.tune")]
)
def test_sigterm_inside_fit_ends_demo_and_tune_with_143(monkeypatch, command, run):
    """fit's loop saved a checkpoint and said so (`Stopped` without a note): the command adds
    nothing and exits 143 (demo and tune exited 130, their own Ctrl-C handlers catching it)."""

    def stopped(config):
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(run, stopped)
    args = [command, "--quiet"] if command == "demo" else [command, "--data-dir", "d", "--tune-dir", "t"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 143 and result.output == ""


@pytest.mark.parametrize(
    "command, args, status, line",
    [
        ("demo", ["--quiet"], 130, "interrupted (Ctrl-C); re-run the same command to resume"),
        ("show-filters", ["run", "-o", "x.png"], 130, "interrupted (Ctrl-C)"),  # nothing to resume
    ],
)
def test_a_plain_ctrl_c_is_one_line_and_130(monkeypatch, command, args, status, line):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("alexnet_tf.demo.run_demo", interrupted)
    monkeypatch.setattr("alexnet_tf.figures.filters.write_filters", interrupted)
    result = CliRunner().invoke(main, [command, *args])
    assert result.exit_code == status and result.output.strip() == line and "Aborted" not in result.output


def test_a_stop_with_a_note_is_said_once_with_flags(monkeypatch):
    def stopped(config):
        raise Stopped(signal.SIGTERM, note="kept; re-run without `overwrite=True`", parameters=("overwrite",))

    monkeypatch.setattr("alexnet_tf.prepare.index.index_records", stopped)
    result = CliRunner().invoke(main, ["index-records", "records"])
    assert result.exit_code == 143 and result.output.strip() == "terminated (SIGTERM): kept; re-run without --overwrite"
