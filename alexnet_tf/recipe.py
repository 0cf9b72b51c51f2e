"""Training recipes: typed, frozen configs loaded from YAML files, with the paper's defaults.

A recipe file (``pipelines/*.yaml``) overrides only what differs from the defaults below, which
are the paper's (`alexnet_tf.paper`, section cited beside each value). Like Model Garden's
experiment files, a recipe has one mapping per section::

    model:     {channel_multiplier: 0.25, initialization: he}
    training:  {epochs: 30, batch_size: 32}

Values are validated on load: an unknown section or key, a wrong type, or an impossible value is
one `InputError` line naming the file, the key and what is allowed. ``section.key=value``
overrides (``fit --set``) are parsed as YAML scalars and validated the same way.

The resolved recipe (every key, defaults included) is what a run records in ``RUN/recipe.yaml``
(`to_yaml`) and what a resumed run is compared against (`alexnet_tf.jobs.check_options`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from alexnet_tf import paper
from alexnet_tf.constants import AUTO_PRECISION, INITIALIZATIONS, LRN_PAPER, LRN_VARIANTS, MIXED_PRECISION
from alexnet_tf.errors import InputError, InvalidArgument, invalid
from alexnet_tf.input.options import InputOptions

# Names of the choices, shared with the code that acts on them (the rest: `alexnet_tf.constants`).
DECAYED_VARIABLES = ("kernels", "all")
POLICIES = ("plateau", "step", "constant")
BATCH_SCALING = ("linear", "none")
# AlexNet's weighted layers, input to output (each tower pair counts as one), and those that
# ``finetune.freeze`` can name: freezing fc8 as well would train nothing.
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
FREEZABLE = LAYERS[:-1]


def _require(section: Any, key: str, condition: bool, allowed: str) -> None:
    """A section's check: ``section.key`` is impossible unless ``condition``; ``allowed`` says what
    is possible (`alexnet_tf.errors.invalid`, as `InputOptions` checks its own keys)."""
    if not condition:
        raise invalid(key, getattr(section, key), allowed)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """`alexnet_tf.network.model.AlexNet` options.

    Attributes:
      channel_multiplier: multiplier on every layer's channels and hidden units (paper: 1).
      two_towers: the paper's two towers (§3.2, Figure 2); False is the single-tower variant.
      local_response_normalization: LRN after conv1 and conv2 (§3.3).
      dropout: dropout rate after fc6 and fc7 (§4.2).
      initialization: "paper" (§5: N(0, 0.01), biases 1 in conv2/4/5, fc6, fc7) or "he" (a named
        deviation for small data; see `AlexNet`).
      lrn_variant: "paper" (§3.3) or "caffe" (Caffe's bvlc_alexnet: k = 1, alpha / n), for
        fine-tuning a model ``import-weights`` made from Caffe's weights.
      pad_input: pad the crop before conv1 (224 → 227); false for Caffe's unpadded 227 crop
        (with ``input.crop_size: 227``).
    """

    channel_multiplier: float = 1.0
    two_towers: bool = True
    local_response_normalization: bool = True
    dropout: float = paper.DROPOUT_RATE  # §4.2
    initialization: str = "paper"  # §5
    lrn_variant: str = LRN_PAPER  # §3.3
    pad_input: bool = True

    def __post_init__(self) -> None:
        _require(self, "channel_multiplier", self.channel_multiplier > 0, "a positive number")
        _require(self, "dropout", 0 <= self.dropout < 1, "a rate in [0, 1)")
        _require(self, "initialization", self.initialization in INITIALIZATIONS, f"one of {', '.join(INITIALIZATIONS)}")
        _require(self, "lrn_variant", self.lrn_variant in LRN_VARIANTS, f"one of {', '.join(LRN_VARIANTS)}")


@dataclasses.dataclass(frozen=True)
class OptimizerSection:
    """§5's SGD: ``v ← momentum·v − weight_decay·ε·w − ε·∂L/∂w; w ← w + v`` (see `alexnet_tf.training.optim`).

    Attributes:
      learning_rate: ε at the reference batch size (§5: 0.01); see ``schedule.batch_scaling``.
      momentum: §5: 0.9.
      weight_decay: the L2 coefficient inside the momentum (§5: 0.0005).
      decayed: which variables decay: "kernels" (weights only, the paper's word) or "all".
    """

    learning_rate: float = paper.LEARNING_RATE  # §5
    momentum: float = paper.MOMENTUM  # §5
    weight_decay: float = paper.WEIGHT_DECAY  # §5
    decayed: str = "kernels"  # §5 "weight decay"

    def __post_init__(self) -> None:
        _require(self, "learning_rate", self.learning_rate > 0, "a positive number")
        _require(self, "momentum", 0 <= self.momentum < 1, "a number in [0, 1)")
        _require(self, "weight_decay", self.weight_decay >= 0, "a number >= 0")
        _require(self, "decayed", self.decayed in DECAYED_VARIABLES, f"one of {', '.join(DECAYED_VARIABLES)}")


@dataclasses.dataclass(frozen=True)
class ScheduleSection:
    """The learning-rate policy (see `alexnet_tf.training.schedule`).

    Attributes:
      policy: "plateau" (§5: ÷10 when the validation error stops improving), "step" (÷10 every
        ``step_epochs``, the usual fixed-budget reproduction) or "constant".
      factor: multiplier at each reduction (§5: 0.1).
      patience: plateau: validations without improvement before a reduction (not in the paper);
        a validation follows every epoch unless `training.validate_every_epochs` says otherwise.
      min_delta: plateau: a drop of the validation top-1 error smaller than this is no
        improvement (not in the paper).
      max_reductions: plateau: reductions in all (§5: three).
      step_epochs: step: epochs between reductions.
      batch_scaling: "linear" (ε × batch_size / reference_batch_size, Goyal et al. 2017) or
        "none". At the paper's batch both give the paper's ε.
      reference_batch_size: the batch the learning rate is given for (§5: 128).
    """

    policy: str = "plateau"  # §5
    factor: float = paper.LR_DECAY_FACTOR  # §5
    patience: int = 5
    min_delta: float = 0.001
    max_reductions: int = paper.LR_DECAYS  # §5
    step_epochs: int = 30
    batch_scaling: str = "linear"
    reference_batch_size: int = paper.BATCH_SIZE  # §5

    def __post_init__(self) -> None:
        _require(self, "policy", self.policy in POLICIES, f"one of {', '.join(POLICIES)}")
        _require(self, "factor", 0 < self.factor < 1, "a number in (0, 1)")
        _require(self, "patience", self.patience >= 0, "an integer >= 0")
        _require(self, "min_delta", 0 <= self.min_delta < 1, "a top-1 error difference in [0, 1)")
        _require(self, "max_reductions", self.max_reductions >= 0, "an integer >= 0")
        _require(self, "step_epochs", self.step_epochs >= 1, "a positive integer")
        _require(self, "batch_scaling", self.batch_scaling in BATCH_SCALING, f"one of {', '.join(BATCH_SCALING)}")
        _require(self, "reference_batch_size", self.reference_batch_size >= 1, "a positive integer")


@dataclasses.dataclass(frozen=True)
class TrainingSection:
    """The loop: length, batch, precision, checkpoints, logging.

    Attributes:
      epochs: passes over the training set (§5: roughly 90).
      batch_size: the global batch, split evenly over the replicas (§5: 128).
      steps_per_epoch: None: training records // batch_size; a number caps an epoch (demos).
      mixed_precision: "auto" (what the hardware does natively, decided when a run starts and
        recorded: `alexnet_tf.training.precision`), "none" (float32), "mixed_bfloat16" or "mixed_float16"
        (with loss scaling).
      jit_compile: XLA for the forward and backward pass (not with the two-tower strategy).
      checkpoint_every_steps: a checkpoint after N steps since the last one, and one at the end of
        each epoch that validated (`validate_every_epochs`).
      keep_checkpoints: step checkpoints kept (the oldest are deleted).
      log_every_steps: TensorBoard training scalars every N steps.
      validate_every_epochs: the validation pass after every N epochs and after the last (Keras'
        ``validation_freq``); 1: every epoch. An epoch without one has validation values of nan
        in history.csv, cannot become best.keras, and does not count towards the plateau
        schedule's ``patience`` (counted in validations). On small data validation can be a large
        share of fit's time (docs/performance.md).
      last_model_every_seconds: last.keras is written at an epoch's end when this many seconds
        have passed since it was last written, and always at the run's end (0: every epoch).
        Writing it costs about as much as a checkpoint: on small data, every epoch's write was a
        large share of fit's time; best.keras is still written whenever an epoch is the best.
      seed: seed of the initial weights, dropout and input pipeline; None draws one at the
        first start (kept in the checkpoint, so a resumed run continues the same data stream).
    """

    epochs: int = paper.EPOCHS  # §5
    batch_size: int = paper.BATCH_SIZE  # §5
    steps_per_epoch: int | None = None
    mixed_precision: str = AUTO_PRECISION  # not in the paper (cuda-convnet computes in float32)
    jit_compile: bool = False
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    log_every_steps: int = 100
    validate_every_epochs: int = 1
    last_model_every_seconds: float = 60.0
    seed: int | None = None

    def __post_init__(self) -> None:
        _require(self, "epochs", self.epochs >= 1, "a positive integer")
        _require(self, "batch_size", self.batch_size >= 1, "a positive integer")
        _require(self, "steps_per_epoch", self.steps_per_epoch is None or self.steps_per_epoch >= 1, "null or >= 1")
        _require(
            self, "mixed_precision", self.mixed_precision in MIXED_PRECISION, f"one of {', '.join(MIXED_PRECISION)}"
        )
        _require(self, "checkpoint_every_steps", self.checkpoint_every_steps >= 1, "a positive integer")
        _require(self, "keep_checkpoints", self.keep_checkpoints >= 1, "a positive integer")
        _require(self, "log_every_steps", self.log_every_steps >= 1, "a positive integer")
        _require(self, "validate_every_epochs", self.validate_every_epochs >= 1, "a positive integer")
        _require(self, "last_model_every_seconds", self.last_model_every_seconds >= 0, "a number of seconds >= 0")
        _require(self, "seed", self.seed is None or self.seed >= 0, "null or an integer >= 0")


@dataclasses.dataclass(frozen=True)
class FinetuneSection:
    """Starting from another model's weights (`alexnet_tf.training.init_from`, docs/fine-tuning.md).

    Attributes:
      init_from: a run directory (one ``import-weights`` wrote, or any of ``fit``'s) or a
        ``.keras`` file whose layers initialise a NEW run, matched by name and shape; fc8 is
        re-initialised when its class count differs. None: the recipe's initialisation.
      freeze: the last layer kept fixed (``conv5``: conv1 … conv5 get no update and no weight
        decay); one of `FREEZABLE`. None: every layer trains.
      lr_multipliers: ``{layer: m}``: the layer's whole update (weight decay included) is ``m``
        times the base learning rate's, as Caffe's ``lr_mult``; layers are `LAYERS` names.
    """

    init_from: str | None = None
    freeze: str | None = None
    lr_multipliers: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(
            self, "freeze", self.freeze is None or self.freeze in FREEZABLE, f"null or one of {', '.join(FREEZABLE)}"
        )
        names = f"a mapping of {', '.join(LAYERS)} to a positive number"
        _require(self, "lr_multipliers", all(name in LAYERS for name in self.lr_multipliers), names)
        _require(self, "lr_multipliers", all(m > 0 for m in self.lr_multipliers.values()), names)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole training recipe; ``Recipe()`` is the paper's."""

    model: ModelSection = ModelSection()
    input: InputOptions = InputOptions()  # the input pipeline's own options (`alexnet_tf.input.options`)
    optimizer: OptimizerSection = OptimizerSection()
    schedule: ScheduleSection = ScheduleSection()
    training: TrainingSection = TrainingSection()
    finetune: FinetuneSection = FinetuneSection()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def learning_rate(self) -> float:
        """The initial learning rate at this recipe's batch size (``schedule.batch_scaling``)."""
        rate = self.optimizer.learning_rate
        if self.schedule.batch_scaling == "linear":
            rate *= self.training.batch_size / self.schedule.reference_batch_size
        return rate


_SECTIONS = typing.get_type_hints(Recipe)


def load_recipe(path: str | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """The paper's recipe, updated by the YAML file at ``path`` and then by ``overrides``.

    Args:
      path: a recipe file (local or ``gs://``), or the name of a built-in one (`builtin_recipes`:
        "paper", "demo"); None starts from the paper's defaults.
      overrides: ``section.key=value`` strings; values are YAML scalars (``0.1``, ``null``, ``true``).

    Raises:
      InputError: one line naming the file (or ``overrides``), the key and what is allowed.
    """
    values: dict[str, dict[str, Any]] = {}
    if path is not None:
        path = builtin_recipes().get(path, path)
        values = _read_file(path)
    for override in overrides:
        section, key, value = _parse_override(override)
        values.setdefault(section, {})[key] = value
    if not overrides:
        return from_dict(values, path)
    try:
        return from_dict(values, f"{path or 'the paper defaults'} with `overrides` {' '.join(overrides)}")
    except InputError as error:
        raise InputError(str(error), ("overrides",)) from None


def builtin_recipes() -> dict[str, str]:
    """The recipes installed with the package (``pipelines/*.yaml``), by name: ``{"demo": path}``."""
    folder = importlib.resources.files("alexnet_tf.pipelines")
    return {entry.name.removesuffix(".yaml"): str(entry) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def from_dict(values: Mapping[str, Any], source: str) -> Recipe:
    """A `Recipe` from ``{section: {key: value}}``, validated; ``source`` names it in errors."""
    sections = {}
    for section, entries in values.items():
        if section not in _SECTIONS:
            raise InputError(f"{source}: unknown section '{section}'; allowed: {', '.join(_SECTIONS)}")
        if not isinstance(entries, Mapping):
            raise InputError(f"{source}: section '{section}' must be a mapping of key: value")
        cls = _SECTIONS[section]
        hints = typing.get_type_hints(cls)
        for key in entries:
            if key not in hints:
                raise InputError(f"{source}: unknown key '{section}.{key}'; allowed: {', '.join(hints)}")
        try:
            sections[section] = cls(
                **{key: _coerce(f"{source}: {section}.{key}", value, hints[key]) for key, value in entries.items()}
            )
        except InvalidArgument as error:
            key, allowed = error.name, error.requirement
            value = entries.get(key, getattr(cls(), key, None))
            raise InputError(f"{source}: {section}.{key}={value!r} is impossible; use {allowed}") from None
    return Recipe(**sections)


def with_defaults(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded recipe (``RUN/recipe.yaml``'s mapping) with the keys it lacks at their defaults:
    keys added to the recipe since the run started, so that a run started by an older version
    resumes unless the new key is set otherwise."""
    complete = Recipe().to_dict()
    for section, entries in recorded.items():
        if isinstance(entries, Mapping) and isinstance(complete.get(section), dict):
            complete[section].update(entries)
        else:
            complete[section] = entries
    return complete


# Exponent notation without a dot, which YAML 1.1 (PyYAML) leaves as a string.
_FLOAT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def _read_text(path: str) -> str | None:
    """The text of the file ``path``, None if there is no such file. A local file is read without
    TensorFlow, so a recipe's errors answer before TensorFlow loads; ``gs://`` and other URLs go
    through `tf.io.gfile` (imported here to keep this module light)."""
    if "://" not in path:
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return f.read()
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return f.read()


def _read_file(path: str) -> dict[str, Any]:
    text = _read_text(path)
    if text is None:
        builtin = ", ".join(sorted(builtin_recipes()))
        raise InputError(f"{path}: recipe file not found; give a YAML file or a built-in recipe ({builtin})")
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"{path}: a recipe is a mapping of sections ({', '.join(_SECTIONS)})")
    return values


def _parse_override(override: str) -> tuple[str, str, Any]:
    name, sep, text = override.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise InputError(
            f"`overrides`: {override!r} is not section.key=value (e.g. training.epochs=30)", ("overrides",)
        )
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise InputError(f"`overrides`: the value of {override!r} is not a YAML scalar", ("overrides",)) from None
    return section, key, value


def _coerce(where: str, value: Any, hint: Any) -> Any:
    """``value`` as the field type ``hint`` (int, float, bool, str, or one of them | None)."""
    if typing.get_origin(hint) is dict:
        key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise InputError(f"{where}={value!r}: wrong type; expected a mapping such as {{fc8: 10}}")
        return {_coerce(where, k, key_hint): _coerce(f"{where}.{k}", v, value_hint) for k, v in value.items()}
    allowed = [hint]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        allowed = list(typing.get_args(hint))
    if value is None:
        if type(None) in allowed:
            return None
        raise InputError(f"{where}: null is not allowed; give {_type_names(allowed)}")
    for kind in allowed:
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads 1e-4 (no dot) as a string
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (bool, str) and isinstance(value, kind):
            return value
    raise InputError(f"{where}={value!r}: wrong type; expected {_type_names(allowed)}")


def _type_names(kinds: list[Any]) -> str:
    return " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
