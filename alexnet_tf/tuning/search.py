"""The search: a `keras_tuner.Tuner` whose trials are `alexnet_tf.training.fit.fit` runs.

keras-tuner's documented way for a custom training loop: subclass `keras_tuner.Tuner` and
override ``run_trial`` to train and return the objective. Here each trial is the recipe (the
base recipe file plus ``--set`` overrides) with the trial's values (`SearchSpace.overrides`)
and ``training.epochs`` set to the per-trial budget, trained by `fit` — the same loop,
optimizer and input pipeline as ``alexnet-tf fit`` — in its own run directory
``TUNE_DIR/search/trial_<id>/run``. The objective is the trial's best validation top-1
(`FitResult.best_val_top1`), maximised.

Layout of ``TUNE_DIR``::

    TUNE_DIR/settings.yaml          what the search was started with (a re-run must match it)
    TUNE_DIR/search/oracle.json     keras-tuner's state; search/trial_<id>/trial.json per trial
    TUNE_DIR/search/trial_<id>/run/ the trial's fit run directory (recipe, checkpoints, models)
    TUNE_DIR/best.yaml              the best trial's recipe (``alexnet-tf fit --recipe``)

Resume (keras-tuner 1.4.8, ``overwrite=False``): re-running the command reloads the oracle;
finished trials are kept and the search continues until ``max_trials``; a trial that was
running when the process died is handed out again with the same id and values, so its `fit`
resumes from the run directory's last checkpoint (keras-tuner itself would start it from
scratch). Known keras-tuner quirks designed around: GridSearch resume raises ``KeyError``
(keras-team/keras-tuner#1055), so grid search is not offered; the tuner deep-copies callbacks
per trial, so none are passed — every trial's checkpoints live in its own run directory.

Strategies: keras-tuner 1.4.8 supports single-worker strategies only; trials run one after
another in this process under ``one-device``, ``mirrored`` or ``two-tower``. ``multi-worker``
(keras-tuner's own distributed tuning is a chief oracle with worker tuners, not a trial spread
over workers) and ``tpu`` (untested) are refused.

Hyperband: its brackets ask for ``tuner/epochs`` per trial, up to ``epochs``; each such trial
trains that many epochs from scratch in its own run directory (the weights of the trial it
continues, ``tuner/trial_id``, are not carried over: correct, more compute). ``max_trials``
caps its schedule.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any

import keras_tuner
import tensorflow as tf
import yaml

from alexnet_tf import files, jobs
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.recipe import Recipe, load_recipe
from alexnet_tf.records.metadata import DatasetMetadata
from alexnet_tf.training.distribute import SINGLE_WORKER_STRATEGIES
from alexnet_tf.training.fit import FitConfig, fit, raise_batch_too_large
from alexnet_tf.training.loop import TrainingDiverged
from alexnet_tf.tuning.space import SearchSpace, load_space

ALGORITHMS = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_top1"
PROJECT = "search"
SETTINGS_FILE = "settings.yaml"
BEST_RECIPE = "best.yaml"
HYPERBAND_EPOCHS = "tuner/epochs"


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """One search.

    Attributes:
      data_dir: prepare-data output.
      tune_dir: the search's directory (module docstring); created if missing.
      recipe_path: base recipe (a file or built-in name; None: the paper's).
      overrides: ``section.key=value`` for the base recipe (fixed in every trial).
      space_path: search space file (`alexnet_tf.tuning.space`); None: the defaults.
      algorithm: one of `ALGORITHMS`.
      max_trials: trials in all (a cap on Hyperband's schedule).
      epochs: per-trial budget (Hyperband: the most any trial gets).
      seed: the oracle's seed.
      strategy, devices: as `FitConfig` (single-worker strategies only).
      verbose: fit's per-epoch output.
    """

    data_dir: str
    tune_dir: str
    recipe_path: str | None = None
    overrides: tuple[str, ...] = ()
    space_path: str | None = None
    algorithm: str = "random"
    max_trials: int = 10
    epochs: int = 10
    seed: int = 0
    strategy: str = "one-device"
    devices: int | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise invalid("algorithm", self.algorithm, f"one of {', '.join(ALGORITHMS)}")
        if self.strategy not in SINGLE_WORKER_STRATEGIES:  # keras-tuner 1.4.8
            raise invalid(
                "strategy",
                self.strategy,
                f"one of {', '.join(SINGLE_WORKER_STRATEGIES)} (keras-tuner 1.4.8 runs trials on a single worker)",
            )
        for name in ("max_trials", "epochs"):
            if getattr(self, name) < 1:
                raise invalid(name, getattr(self, name), "a positive integer")


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One trial of the table."""

    trial_id: str
    status: str
    values: dict[str, Any]  # the searched values, as the space file writes them
    epochs: int
    val_top1: float | None


@dataclasses.dataclass(frozen=True)
class TuneResult:
    trials: list[TrialRow]
    best: TrialRow | None
    best_recipe_path: str | None
    space_keys: list[str]

    def table(self) -> str:
        """The trials as a text table: id, status, each searched value, validation top-1."""
        keys = self.space_keys
        header = ["trial", "status", *keys, "epochs", OBJECTIVE]
        rows = [
            [row.trial_id, row.status, *(_show(row.values.get(key)) for key in keys), row.epochs, _show(row.val_top1)]
            for row in self.trials
        ]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
        lines = [
            "  ".join(f"{cell:<{width}}" for cell, width in zip(line, widths, strict=True)) for line in [header, *rows]
        ]
        return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


class FitTuner(keras_tuner.Tuner):
    """A tuner whose ``run_trial`` is one `fit` of the recipe with the trial's values."""

    def __init__(self, config: TuneConfig, space: SearchSpace, **kwargs: Any) -> None:
        self.config = config
        self.space = space
        super().__init__(**kwargs)

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any) -> float:
        config = self.config
        values = trial.hyperparameters.values
        epochs = int(values.get(HYPERBAND_EPOCHS, config.epochs))
        recipe = trial_recipe(config, self.space, values, epochs)
        run_dir = posixpath.join(self.get_trial_dir(trial.trial_id), "run")
        print(f"trial {trial.trial_id}: {' '.join(self.space.overrides(values))}, {epochs} epoch(s) in {run_dir}")
        fit_config = FitConfig(
            config.data_dir, run_dir, recipe, strategy=config.strategy, devices=config.devices, verbose=config.verbose
        )
        try:
            result = fit(fit_config)
        except TrainingDiverged as error:
            print(f"trial {trial.trial_id} diverged ({error}); scored as top-1 0")
            return 0.0
        except InputError as error:  # not the trial's fault: stop the search with the message
            raise keras_tuner.errors.FatalError(str(error)) from error
        return result.best_val_top1


def trial_recipe(config: TuneConfig, space: SearchSpace, values: dict[str, Any], epochs: int) -> Recipe:
    """The base recipe with a trial's values and ``training.epochs=epochs``."""
    return load_recipe(config.recipe_path, [*config.overrides, *space.overrides(values), f"training.epochs={epochs}"])


def tune(config: TuneConfig) -> TuneResult:
    """Runs (or resumes) the search of ``config``; writes ``best.yaml``; returns the trials."""
    # Everything a trial could fail on that is not the trial's own values is refused before
    # anything is written: a missing or foreign data directory, a batch larger than the data.
    train_records = DatasetMetadata.load(config.data_dir).splits["train"].num_records
    space = load_space(config.space_path, train_records)
    base = load_recipe(config.recipe_path, config.overrides)
    if "training.batch_size" not in space.ranges and base.training.batch_size > train_records:
        raise_batch_too_large(config.data_dir, train_records, base.training.batch_size)
    _record_settings(config, space, base)
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    if config.algorithm == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(objective, max_trials=config.max_trials, seed=config.seed)
    elif config.algorithm == "bayesian":
        try:
            oracle = keras_tuner.oracles.BayesianOptimizationOracle(objective, config.max_trials, seed=config.seed)
        except ImportError:  # scipy or scikit-learn
            raise InputError(
                "`algorithm='bayesian'` needs scipy and scikit-learn: pip install 'keras-tuner[bayesian]'",
                ("algorithm",),
            ) from None
    else:
        oracle = keras_tuner.oracles.HyperbandOracle(objective, max_epochs=config.epochs, seed=config.seed)
        oracle.max_trials = config.max_trials
    tuner = FitTuner(
        config,
        space,
        oracle=oracle,
        hypermodel=_Space(space),
        directory=config.tune_dir,
        project_name=PROJECT,
        overwrite=False,
    )
    kept = "the finished trials are kept; re-run the same command to resume (the running trial from its checkpoint)"
    try:
        with jobs.Job(kept=kept):  # keras-tuner records the trials; each trial's fit, its checkpoints
            tuner.search()
    except keras_tuner.errors.FatalError as error:
        raise (error.__cause__ if isinstance(error.__cause__, InputError) else error) from None
    trials = sorted(tuner.oracle.trials.values(), key=lambda trial: int(trial.trial_id))  # reloaded: any order
    rows = [_row(trial, space, config.epochs) for trial in trials]
    finished = [row for row in rows if row.val_top1 is not None]
    best = max(finished, key=lambda row: row.val_top1, default=None)
    best_path = None
    if best is not None:
        best_path = posixpath.join(config.tune_dir, BEST_RECIPE)
        recipe = trial_recipe(config, space, best.values, base.training.epochs)
        header = (
            f"# Best of {len(finished)} trial(s) of `alexnet-tf tune` in {config.tune_dir}: trial {best.trial_id}, "
            f"validation top-1 {best.val_top1:.4f} after {config.epochs} epoch(s).\n"
            f"# The searched values: {' '.join(space.overrides(best.values))}; training.epochs is the base recipe's.\n"
        )
        files.write_atomically(best_path, (header + recipe.to_yaml()).encode())
    return TuneResult(rows, best, best_path, list(space.ranges))


class _Space(keras_tuner.HyperModel):
    """Declares the search space up front, so the oracle draws every trial's values (without a
    hypermodel the first trial would get each range's default)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space

    def build(self, hp: keras_tuner.HyperParameters) -> None:
        self.space.declare(hp)


def _record_settings(config: TuneConfig, space: SearchSpace, base: Recipe) -> None:
    """Writes the search's settings on the first run; refuses a re-run with different ones once
    a trial has finished (before that, the re-run starts the search afresh)."""
    settings = {
        "algorithm": config.algorithm,
        "max_trials": config.max_trials,
        "epochs": config.epochs,
        "seed": config.seed,
        "space": space.ranges,
        "recipe": base.to_dict(),
    }
    path = posixpath.join(config.tune_dir, SETTINGS_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            recorded = yaml.safe_load(f.read())
        changed = jobs.check_options(
            recorded,
            settings,
            f"{path}: this search was started with other settings",
            "re-run with the same settings to continue it, or use another `tune_dir`",
            ("tune_dir",),
            allow_change=not _completed_trials(config.tune_dir),
        )
        if not changed:
            return
        # Nothing of the earlier search is worth keeping (it stopped before any trial finished, e.g.
        # on a value that could not run): start it afresh with these settings.
        print(
            f"{config.tune_dir}: no trial of the earlier search finished; starting over with new {', '.join(changed)}"
        )
        search_dir = posixpath.join(config.tune_dir, PROJECT)
        if tf.io.gfile.exists(search_dir):
            tf.io.gfile.rmtree(search_dir)
    with files.output_errors(config.tune_dir):
        tf.io.gfile.makedirs(config.tune_dir)
    files.write_atomically(path, yaml.safe_dump(settings, sort_keys=False).encode())


def _completed_trials(tune_dir: str) -> int:
    """How many trials of the search in ``tune_dir`` finished (keras-tuner's ``trial.json`` files)."""
    count = 0
    for path in tf.io.gfile.glob(posixpath.join(tune_dir, PROJECT, "trial_*", "trial.json")):
        with tf.io.gfile.GFile(path) as f:
            count += json.load(f).get("status") == "COMPLETED"
    return count


def _row(trial: keras_tuner.engine.trial.Trial, space: SearchSpace, epochs: int) -> TrialRow:
    values = trial.hyperparameters.values
    searched = {key: space.value(key, values[key]) for key in space.ranges if key in values}
    score = trial.score if trial.status == "COMPLETED" else None
    return TrialRow(trial.trial_id, trial.status, searched, int(values.get(HYPERBAND_EPOCHS, epochs)), score)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
