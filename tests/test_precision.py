"""``training.mixed_precision: auto`` (`alexnet_tf.training.precision`): the choice from faked hardware, how
a run records it and keeps it on another host, and float16 with loss scaling in `fit`'s loop."""

import os

import pytest
import tensorflow as tf
import yaml

from alexnet_tf.recipe import load_recipe
from alexnet_tf.training import precision
from alexnet_tf.training.fit import FitConfig, fit
from alexnet_tf.training.precision import Choice, choose, resolve
from tests import test_train
from tests.test_train import TINY

AUTO = "training.mixed_precision=auto"  # test_train's TINY recipe fixes none
records = test_train.records  # its fixture: 4 classes of 72×72 records

# /proc/cpuinfo as Linux writes it (one block per core; trimmed).
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl {extra}
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl {extra}
"""
AMPERE = {"device_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0)}
VOLTA = {"device_name": "Tesla V100-SXM2-16GB", "compute_capability": (7, 0)}
PASCAL = {"device_name": "Tesla P100-PCIE-16GB", "compute_capability": (6, 0)}
BF16_HOST = Choice("mixed_bfloat16", "this CPU has avx512_bf16: bfloat16 in hardware")
FP32_HOST = Choice("none", "this CPU has no avx512_bf16 or amx_bf16: bfloat16 would be emulated")


@pytest.mark.parametrize(
    "cpu_flags, gpus, expected",
    [
        ("avx512_bf16 avx512_vnni", [], "mixed_bfloat16"),
        ("amx_bf16 amx_tile amx_int8", [], "mixed_bfloat16"),
        ("avx512_vnni", [], "none"),  # AVX-512 without BF16: bfloat16 is emulated
        ("", [], "none"),
        ("", [AMPERE], "mixed_bfloat16"),  # the GPU decides, whatever the CPU
        ("avx512_bf16", [VOLTA], "mixed_float16"),
        ("avx512_bf16", [PASCAL], "none"),
        ("", [AMPERE, VOLTA], "mixed_float16"),  # every replica computes alike: the oldest GPU decides
        ("", [{"device_name": "some GPU"}], "none"),  # no compute capability reported
    ],
)
def test_the_choice_follows_the_faked_hardware(cpu_flags, gpus, expected):
    choice = choose(CPUINFO.format(extra=cpu_flags), gpus)
    assert choice.value == expected
    assert choice.reason  # said on the run's first line


def test_the_reason_names_what_decided():
    assert choose(CPUINFO.format(extra="avx512_bf16"), []).reason == (
        "this CPU (AMD EPYC 9R14) has avx512_bf16: bfloat16 in hardware"
    )
    assert "compute capability 7.0" in choose("", [VOLTA]).reason
    assert choose("", []) == Choice("none", "no /proc/cpuinfo to tell whether this CPU does bfloat16 natively")
    assert choose("", [], tpu=True).value == "mixed_bfloat16"
    # A flag is a whole word: "avx512_bf16x" is not the flag.
    assert choose(CPUINFO.format(extra="avx512_bf16x"), []).value == "none"


def test_auto_is_the_default_of_the_built_in_recipes():
    for name in (None, "paper", "demo"):
        assert load_recipe(name).training.mixed_precision == "auto"


def test_auto_takes_the_hosts_choice_and_an_explicit_value_is_kept():
    recipe, lines = resolve(load_recipe(None), None, BF16_HOST)
    assert recipe.training.mixed_precision == "mixed_bfloat16"
    assert lines == ["precision: mixed_bfloat16 (auto: this CPU has avx512_bf16: bfloat16 in hardware)"]
    assert resolve(load_recipe(None), None, FP32_HOST)[0].training.mixed_precision == "none"

    explicit = load_recipe(None, ["training.mixed_precision=mixed_bfloat16"])
    recipe, lines = resolve(explicit, None, FP32_HOST)
    assert recipe == explicit
    assert lines[0] == "precision: mixed_bfloat16 (set in the recipe)"
    assert lines[1].startswith("notice: on this host auto would choose none for a new run (this CPU has no avx512_bf16")
    # An explicit float32 is deliberate: no notice.
    assert resolve(load_recipe(None, ["training.mixed_precision=none"]), None, BF16_HOST)[1] == [
        "precision: none (set in the recipe)"
    ]


def test_auto_keeps_the_recorded_precision_of_a_resumed_run():
    recorded = {"training": {"mixed_precision": "mixed_bfloat16"}}
    recipe, lines = resolve(load_recipe("demo"), recorded, FP32_HOST)
    assert recipe.training.mixed_precision == "mixed_bfloat16"
    assert lines[0] == "precision: mixed_bfloat16 (auto: the run's recorded recipe.yaml, which it was started with)"
    assert lines[1].endswith("; to switch this run: set training.mixed_precision=none and `allow_recipe_change=True`")
    # float16 runs carry a loss scale in the checkpoint: no switching, only a restart.
    recipe, lines = resolve(load_recipe(None), {"training": {"mixed_precision": "mixed_float16"}}, BF16_HOST)
    assert recipe.training.mixed_precision == "mixed_float16" and "`overwrite=True` restarts" in lines[1]
    # A recorded value that is not a precision (hand-edited) is ignored: this host decides.
    assert (
        resolve(load_recipe(None), {"training": {"mixed_precision": "auto"}}, FP32_HOST)[0].training.mixed_precision
        == "none"
    )
    assert resolve(load_recipe(None), {"training": None}, BF16_HOST)[0].training.mixed_precision == "mixed_bfloat16"


# --- In fit ---------------------------------------------------------------------------------------


def fake_cpu(monkeypatch, tmp_path, flags: str) -> None:
    """This host's /proc/cpuinfo, as `precision.host_choice` reads it (the test machine has no GPU)."""
    path = tmp_path / f"cpuinfo-{flags or 'plain'}"
    path.write_text(CPUINFO.format(extra=flags))
    monkeypatch.setattr(precision, "CPUINFO", str(path))


def recorded_precision(run: str) -> str:
    with open(os.path.join(run, "recipe.yaml")) as f:
        return yaml.safe_load(f)["training"]["mixed_precision"]


def test_fit_records_the_choice_and_keeps_it_on_a_host_that_would_choose_otherwise(
    records, tmp_path, monkeypatch, capsys
):
    run = str(tmp_path / "run")
    fake_cpu(monkeypatch, tmp_path, "avx512_bf16")
    fit(FitConfig(records, run, load_recipe(None, [*TINY, "training.epochs=1", AUTO]), verbose=False))
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "precision: mixed_bfloat16 (auto: this CPU (AMD EPYC 9R14) has avx512_bf16: bfloat16 in hardware)"
    assert recorded_precision(run) == "mixed_bfloat16"

    # Resumed on a host without bfloat16: the run keeps its precision (not refused as a changed recipe).
    fake_cpu(monkeypatch, tmp_path, "")
    resumed = fit(
        FitConfig(records, run, load_recipe(None, [*TINY, "training.epochs=2", AUTO]), allow_recipe_change=True)
    )
    out = capsys.readouterr().out.splitlines()
    assert resumed.resumed_from == (1, 8)
    assert out[0] == "precision: mixed_bfloat16 (auto: the run's recorded recipe.yaml, which it was started with)"
    assert out[1].endswith("to switch this run: set training.mixed_precision=none and `allow_recipe_change=True`")
    assert recorded_precision(run) == "mixed_bfloat16"
    # What the notice says works: the checkpoint restores in float32.
    switched = load_recipe(None, [*TINY, "training.epochs=3", "training.mixed_precision=none"])
    assert fit(FitConfig(records, run, switched, allow_recipe_change=True, verbose=False)).resumed_from == (2, 16)
    assert recorded_precision(run) == "none"
    capsys.readouterr()
    # --overwrite starts again: this host decides.
    fit(FitConfig(records, run, load_recipe(None, [*TINY, "training.epochs=1", AUTO]), overwrite=True, verbose=False))
    assert capsys.readouterr().out.startswith("precision: none (auto: this CPU (AMD EPYC 9R14) has no avx512_bf16")


def test_mixed_float16_trains_with_loss_scaling_in_the_custom_loop(records, tmp_path):
    """float16 gradients are scaled (`LossScaleOptimizer.scale_loss`) and unscaled before SGD: the
    loss falls and the model learns (unscaled updates would be 2**15 too large, unscaled losses'
    gradients 2**15 too small)."""
    run = str(tmp_path / "run")
    recipe = load_recipe(None, [*TINY, "training.epochs=3", "training.mixed_precision=mixed_float16"])
    result = fit(FitConfig(records, run, recipe, verbose=False))
    losses = [row["loss"] for row in result.history]
    assert losses[2] < losses[1] < losses[0]
    assert result.best_val_top1 >= 0.4  # chance is 0.25
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(run, "checkpoints")))
    scale = next(name for name in reader.get_variable_to_shape_map() if "dynamic_scale" in name)
    assert 1 <= reader.get_tensor(scale) <= 2.0**15  # the loss scale is in the checkpoint (halved on overflows)
    assert recorded_precision(run) == "mixed_float16"
