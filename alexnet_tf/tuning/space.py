"""The search space of ``alexnet-tf tune``: recipe values (``section.key``) and their ranges.

A space file is a YAML mapping from recipe keys to ranges; it replaces the default range of each
key it names and adds the keys the defaults lack (``key: null`` drops a default key)::

    optimizer.learning_rate: {min: 0.001, max: 0.1, sampling: log}
    model.dropout: {min: 0.0, max: 0.7, step: 0.1}
    training.batch_size: {values: [64, 128, 256]}

``{values: [...]}`` is a `keras_tuner.HyperParameters.Choice`; ``{min, max}`` a ``Float`` (an
``Int`` when both are integers) with optional ``step`` and ``sampling`` (linear, log,
reverse_log). Every value a range can produce is checked against the recipe's own validation
(`alexnet_tf.recipe.load_recipe` with ``section.key=value`` overrides) before any trial runs,
so an impossible range is one error line, not a failed trial.

Defaults (`DEFAULT_SPACE`): around the paper's §5 values, the ones the issue names — learning
rate, weight decay, momentum, dropout, LRN on/off, the initialisation, batch size. The default
batch sizes are sized to the data: those above the training records are left out (a trial could
not run one epoch); a space file's batch sizes above them are refused before any trial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import keras_tuner
import tensorflow as tf
import yaml

from alexnet_tf.errors import InputError
from alexnet_tf.recipe import load_recipe

SAMPLINGS = ("linear", "log", "reverse_log")

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "optimizer.learning_rate": {"min": 0.001, "max": 0.1, "sampling": "log"},  # §5: 0.01
    "optimizer.weight_decay": {"min": 0.00005, "max": 0.005, "sampling": "log"},  # §5: 0.0005
    "optimizer.momentum": {"values": [0.8, 0.9, 0.95]},  # §5: 0.9
    "model.dropout": {"min": 0.0, "max": 0.7, "step": 0.1},  # §4.2: 0.5
    "model.local_response_normalization": {"values": [True, False]},  # §3.3: on
    "model.initialization": {"values": ["paper", "he"]},  # §5: paper
    "training.batch_size": {"values": [64, 128, 256]},  # §5: 128
}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Validated ranges by recipe key (``section.key``), in a fixed order."""

    ranges: dict[str, dict[str, Any]]

    def declare(self, hp: keras_tuner.HyperParameters) -> None:
        """Registers every range with ``hp`` (keras-tuner's names are the recipe keys)."""
        for key, spec in self.ranges.items():
            if "values" in spec:
                hp.Choice(key, spec["values"])
            elif isinstance(spec["min"], int) and isinstance(spec["max"], int):
                hp.Int(key, spec["min"], spec["max"], step=spec.get("step"), sampling=spec.get("sampling", "linear"))
            else:
                hp.Float(key, spec["min"], spec["max"], step=spec.get("step"), sampling=spec.get("sampling", "linear"))

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """``section.key=value`` overrides for one trial's values (keras-tuner's own ``tuner/…``
        entries, such as Hyperband's epochs, are not recipe keys and are left out)."""
        return [f"{key}={_yaml_scalar(self.value(key, values[key]))}" for key in self.ranges if key in values]

    def value(self, key: str, value: Any) -> Any:
        """A choice as written in the space (keras-tuner hands booleans back as 0 and 1); a float
        drawn on a stepped range rounded to 12 digits (``0.1 * 3`` is ``0.30000000000000004``)."""
        choices = self.ranges[key].get("values")
        if choices:
            return next((choice for choice in choices if choice == value), value)
        return float(f"{value:.12g}") if isinstance(value, float) else value

    def for_training_records(self, train_records: int, given: frozenset[str]) -> SearchSpace:
        """This space with no ``training.batch_size`` above ``train_records`` (a trial could not run
        one epoch). Default choices that are too large are dropped; a range the space file gave
        (``given``) that reaches past the data is an `InputError`, before any trial runs."""
        key = "training.batch_size"
        spec = self.ranges.get(key)
        if spec is None:
            return self
        too_large = [v for v in spec.get("values", [spec.get("max")]) if v > train_records]
        if not too_large:
            return self
        if key in given:
            raise InputError(
                f"{key}: {', '.join(map(str, too_large))} exceed the {train_records} training records; "
                "give batch sizes up to that"
            )
        ranges = dict(self.ranges)
        fitting = [v for v in spec["values"] if v <= train_records]
        if fitting:
            ranges[key] = {"values": fitting}
        else:
            del ranges[key]
        return SearchSpace(ranges)


def load_space(path: str | None = None, train_records: int | None = None) -> SearchSpace:
    """`DEFAULT_SPACE` updated by the YAML file at ``path`` (module docstring), validated; with
    ``train_records``, no batch size above it (`SearchSpace.for_training_records`)."""
    ranges = dict(DEFAULT_SPACE)
    given: dict[str, Any] = {}
    source = "the default search space"
    if path is not None:
        source = path
        if not tf.io.gfile.exists(path):
            raise InputError(f"{path}: search space file not found")
        with tf.io.gfile.GFile(path) as f:
            try:
                given = yaml.safe_load(f.read()) or {}
            except yaml.YAMLError as error:
                raise InputError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(given, dict):
            raise InputError(f"{path}: a search space is a mapping of section.key: {{min, max}} or {{values}}")
        for key, spec in given.items():
            if spec is None:
                ranges.pop(key, None)
            else:
                ranges[key] = spec
    if not ranges:
        raise InputError(f"{source}: the search space is empty")
    for key, spec in ranges.items():
        _check(source, key, spec)
    space = SearchSpace(ranges)
    if train_records is not None:
        try:
            space = space.for_training_records(train_records, frozenset(given))
        except InputError as error:
            raise InputError(f"{source}: {error}") from None
    return space


def _check(source: str, key: str, spec: Any) -> None:
    where = f"{source}: {key}"
    if not isinstance(spec, dict) or not ({"values"} == set(spec) or {"min", "max"} <= set(spec)):
        raise InputError(f"{where}: give {{values: [...]}} or {{min: A, max: B}} (optional step, sampling)")
    extra = set(spec) - {"values", "min", "max", "step", "sampling"}
    if extra:
        raise InputError(
            f"{where}: unknown field(s) {', '.join(sorted(extra))}; allowed: values, min, max, step, sampling"
        )
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values or len({type(v) for v in values}) != 1:
            raise InputError(f"{where}: values must be a non-empty list of one type")
    else:
        values = [spec["min"], spec["max"]]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) or values[0] >= values[1]:
            raise InputError(f"{where}: min and max must be numbers with min < max")
        if spec.get("sampling", "linear") not in SAMPLINGS:
            raise InputError(f"{where}: sampling must be one of {', '.join(SAMPLINGS)}")
    for value in values:  # the recipe's own validation: known key, right type, possible value
        load_recipe(None, [f"{key}={_yaml_scalar(value)}"])


def _yaml_scalar(value: Any) -> str:
    """``value`` as the YAML scalar `load_recipe` parses back to it (``true``, ``0.001``, ``he``)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
