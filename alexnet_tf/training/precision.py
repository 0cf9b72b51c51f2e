"""``training.mixed_precision: auto``: the precision this host computes in natively, decided at run start.

The same recipe runs on machines that differ: a CPU with AVX-512 BF16 or AMX trains in
``mixed_bfloat16`` 1.5× faster than in float32, while one without them emulates bfloat16 and is
slower than float32 (see docs/performance.md). So `choose` picks, from what the hardware says:

* a TPU (strategy ``tpu``): ``mixed_bfloat16`` (its native format);
* GPUs (the model runs on them): compute capability ≥ 8.0 (Ampere and later) on every GPU:
  ``mixed_bfloat16``; ≥ 7.0 (tensor cores): ``mixed_float16`` (with loss scaling,
  `alexnet_tf.training.optim`); older: ``none`` (float32; no gain from float16 there);
* otherwise the CPU: the ``avx512_bf16`` or ``amx_bf16`` flag in ``/proc/cpuinfo``:
  ``mixed_bfloat16``; else ``none``. Without ``/proc/cpuinfo`` (not Linux) nothing is known: ``none``.

`resolve` turns a recipe's ``auto`` into that choice, or, when the run directory already has a
recorded recipe (a resumed run), into the precision the run was started with: a run keeps its
precision across hosts (the checkpoint of a ``mixed_float16`` run also holds the loss scale, so it
cannot even be restored under another precision). It adds a notice when this host would choose
otherwise, with the way to switch. An explicit value is kept as given (with the same notice if
it is a mixed precision this host does not do natively).
The resolved value is what `alexnet_tf.training.fit.fit` records in ``RUN/recipe.yaml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from alexnet_tf import errors
from alexnet_tf.recipe import AUTO_PRECISION, MIXED_PRECISION, Recipe
from alexnet_tf.runs import read_recorded_recipe

CPUINFO = "/proc/cpuinfo"
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class Choice:
    """A ``training.mixed_precision`` value (never ``auto``) and why it was chosen."""

    value: str
    reason: str


def choose(cpuinfo: str, gpus: Sequence[Mapping[str, Any]] = (), tpu: bool = False) -> Choice:
    """The precision for this hardware (module docstring).

    Args:
      cpuinfo: the text of ``/proc/cpuinfo`` ("" if unknown).
      gpus: `tf.config.experimental.get_device_details` of each GPU (``compute_capability``:
        ``(major, minor)``; ``device_name``).
      tpu: the run is on a TPU.
    """
    if tpu:
        return Choice("mixed_bfloat16", "TPUs compute in bfloat16 natively")
    if gpus:
        capabilities = [tuple(gpu.get("compute_capability") or (0, 0)) for gpu in gpus]
        lowest = min(capabilities)
        names = ", ".join(sorted({str(gpu.get("device_name", "GPU")) for gpu in gpus}))
        described = f"{names}, compute capability {lowest[0]}.{lowest[1]}" if lowest > (0, 0) else names
        if lowest >= (8, 0):
            return Choice("mixed_bfloat16", f"the GPU does bfloat16 natively ({described})")
        if lowest >= (7, 0):
            return Choice("mixed_float16", f"the GPU has float16 tensor cores but no bfloat16 ({described})")
        return Choice("none", f"the GPU has no fast bfloat16 or float16 ({described} < 7.0)")
    if not cpuinfo:
        return Choice("none", f"no {CPUINFO} to tell whether this CPU does bfloat16 natively")
    flags = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            flags.update(value.split())
    found = [flag for flag in BFLOAT16_CPU_FLAGS if flag in flags]
    model = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    cpu = f"this CPU ({model})" if model else "this CPU"
    if found:
        return Choice("mixed_bfloat16", f"{cpu} has {found[0]}: bfloat16 in hardware")
    return Choice("none", f"{cpu} has no {' or '.join(BFLOAT16_CPU_FLAGS)}: bfloat16 would be emulated")


def host_choice(tpu: bool = False) -> Choice:
    """`choose` for this machine: its ``/proc/cpuinfo`` (local) and TensorFlow's GPU details.

    Lists the physical GPUs only, so it can run before the logical devices are configured.
    """
    import tensorflow as tf  # imported here to keep `choose` usable without TensorFlow's start-up

    try:
        with open(CPUINFO) as f:
            cpuinfo = f.read()
    except OSError:
        cpuinfo = ""
    gpus = [tf.config.experimental.get_device_details(gpu) for gpu in tf.config.list_physical_devices("GPU")]
    return choose(cpuinfo, gpus, tpu)


def resolve(recipe: Recipe, recorded: Mapping[str, Any] | None, host: Choice) -> tuple[Recipe, list[str]]:
    """``recipe`` with ``training.mixed_precision`` decided, and the lines that say what and why.

    Args:
      recipe: the run's recipe; its ``auto`` is replaced, an explicit value kept.
      recorded: the run directory's recorded recipe (``RUN/recipe.yaml`` as a dict), None for a
        new run; its precision is what ``auto`` keeps on resume.
      host: this host's `Choice` (`host_choice`).
    """
    requested = recipe.training.mixed_precision
    kept = ((recorded or {}).get("training") or {}).get("mixed_precision")
    if requested != AUTO_PRECISION:
        value, why = requested, "set in the recipe"
    elif kept != AUTO_PRECISION and kept in MIXED_PRECISION:
        value, why = kept, "auto: the run's recorded recipe.yaml, which it was started with"
    else:
        value, why = host.value, f"auto: {host.reason}"
    lines = [f"precision: {value} ({why})"]
    # An explicit float32 is a deliberate choice; anything else that is not this host's is worth a word.
    if value != host.value and (requested == AUTO_PRECISION or value != "none"):
        notice = f"notice: on this host auto would choose {host.value} for a new run ({host.reason})"
        if recorded is not None and "mixed_float16" in (value, host.value):
            notice += "; a run's checkpoint cannot change to or from mixed_float16 (loss scale): "
            notice += "`overwrite=True` restarts"
        elif recorded is not None:
            notice += f"; to switch this run: set training.mixed_precision={host.value} and `allow_recipe_change=True`"
        lines.append(errors.worded(notice, ("overwrite", "allow_recipe_change")))
    training = dataclasses.replace(recipe.training, mixed_precision=value)
    return dataclasses.replace(recipe, training=training), lines


def for_run(recipe: Recipe, model_dir: str, overwrite: bool, tpu: bool = False) -> tuple[Recipe, list[str]]:
    """`resolve` for a run directory: against its recorded recipe (none with ``overwrite``, which
    starts the run again) and this host (`host_choice`)."""
    recorded = None if overwrite else read_recorded_recipe(model_dir)
    return resolve(recipe, recorded, host_choice(tpu))
