"""Recipes: the paper's defaults, YAML files, --set overrides and one-line validation errors."""

import pathlib

import pytest
import yaml

from alexnet_tf import paper
from alexnet_tf.errors import InputError
from alexnet_tf.jobs import changed_options
from alexnet_tf.recipe import Recipe, load_recipe, with_defaults

PIPELINES = pathlib.Path(__file__).resolve().parents[1] / "pipelines"


def write(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_papers_and_paper_yaml_changes_nothing():
    recipe = Recipe()
    assert recipe.optimizer.learning_rate == paper.LEARNING_RATE == 0.01
    assert recipe.optimizer.momentum == 0.9 and recipe.optimizer.weight_decay == 5e-4
    assert recipe.training.batch_size == 128 and recipe.training.epochs == 90
    assert recipe.schedule.policy == "plateau" and recipe.schedule.max_reductions == 3
    assert recipe.schedule.factor == 0.1 and recipe.model.dropout == 0.5
    assert recipe.model.initialization == "paper" and recipe.input.normalize_in_model
    assert load_recipe(str(PIPELINES / "paper.yaml")) == recipe
    assert load_recipe(None) == recipe


def test_demo_recipe_overrides_only_some_keys():
    demo = load_recipe(str(PIPELINES / "demo.yaml"))
    assert demo.model.initialization == "he"
    assert demo.optimizer.momentum == paper.MOMENTUM  # not overridden


def test_a_file_overrides_only_what_it_names_and_set_wins(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 5\n  batch_size: 16\nmodel:\n  channel_multiplier: 0.25\n")
    recipe = load_recipe(path, ["training.epochs=7", "schedule.policy=step", "training.seed=null"])
    assert recipe.training.epochs == 7 and recipe.training.batch_size == 16
    assert recipe.model.channel_multiplier == 0.25 and recipe.schedule.policy == "step"
    assert recipe.training.seed is None and recipe.optimizer == Recipe().optimizer


def test_integers_are_accepted_for_floats():
    assert load_recipe(None, ["optimizer.learning_rate=1"]).optimizer.learning_rate == 1.0
    # YAML 1.1 reads 5e-4 (no dot) as a string; a float field takes it as the number.
    assert load_recipe(None, ["optimizer.weight_decay=5e-4"]).optimizer.weight_decay == 5e-4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optimiser:\n  momentum: 0.9\n", "unknown section 'optimiser'; allowed: model, input, optimizer"),
        ("optimizer:\n  momentun: 0.9\n", "unknown key 'optimizer.momentun'; allowed: learning_rate, momentum"),
        ("training:\n  epochs: ten\n", "training.epochs='ten': wrong type; expected int"),
        ("training:\n  epochs: 1.5\n", "training.epochs=1.5: wrong type"),
        ("model:\n  two_towers: 1\n", "model.two_towers=1: wrong type; expected bool"),
        ("training:\n  batch_size: null\n", "training.batch_size: null is not allowed"),
        ("optimizer:\n  momentum: 1.5\n", "optimizer.momentum=1.5 is impossible; use a number in [0, 1)"),
        ("training:\n  mixed_precision: fp16\n", "training.mixed_precision='fp16' is impossible; use one of auto,"),
        ("- a\n- b\n", "a recipe is a mapping of sections"),
        ("training: [1\n", "not valid YAML"),
    ],
)
def test_validation_errors_name_the_file_the_key_and_what_is_allowed(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as error:
        load_recipe(path)
    message = str(error.value)
    assert message.startswith(path) and expected in message and "\n" not in message


def test_bad_overrides(tmp_path):
    with pytest.raises(InputError, match=r"`overrides`: 'epochs=3' is not section.key=value"):
        load_recipe(None, ["epochs=3"])
    with pytest.raises(InputError, match=r"with `overrides` training.keep_checkpoints=0: training.keep_checkpoints=0"):
        load_recipe(None, ["training.keep_checkpoints=0"])
    with pytest.raises(InputError, match="recipe file not found"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_resolved_recipe_round_trips_and_differences_name_keys():
    recipe = load_recipe(None, ["training.epochs=3", "model.dropout=0.25"])
    recorded = yaml.safe_load(recipe.to_yaml())
    assert changed_options(recorded, recipe.to_dict()) == []
    changed = load_recipe(None, ["training.epochs=4", "model.dropout=0.25", "training.mixed_precision=mixed_bfloat16"])
    assert changed_options(recorded, changed.to_dict()) == ["training.epochs", "training.mixed_precision"]
    older = {**recorded, "training": {k: v for k, v in recorded["training"].items() if k != "log_every_steps"}}
    assert changed_options(with_defaults(older), recipe.to_dict()) == []  # a key added since: its default
    logged = load_recipe(None, ["training.epochs=3", "model.dropout=0.25", "training.log_every_steps=7"])
    assert changed_options(with_defaults(older), logged.to_dict()) == ["training.log_every_steps"]


def test_linear_batch_scaling():
    assert load_recipe(None, ["training.batch_size=256"]).learning_rate() == pytest.approx(0.02)
    assert load_recipe(None, ["training.batch_size=256", "schedule.batch_scaling=none"]).learning_rate() == 0.01
    assert Recipe().learning_rate() == paper.LEARNING_RATE
