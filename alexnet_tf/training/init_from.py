"""``fit --init-from SOURCE`` (the recipe's ``finetune.init_from``): a new run starts from another model's weights.

SOURCE is what `alexnet_tf.runs.load_model` reads: a run directory (``import-weights`` made
from Caffe's ``bvlc_alexnet``, or any run of ``fit``) or a ``.keras`` file. Its network must be
the recipe's architecture (`check_fits`, before anything is written): the same widths
(``model.channel_multiplier``), towers or none (``model.two_towers``), LRN and its variant,
input padding and crop size, and ``input_scale`` (``model.initialization: he``); the first
difference found in each is named in one line with the recipe key to set.

The weights (`initialize`): layers are matched by base name (`alexnet_tf.network.model.base_name`,
so ``conv2`` of Caffe's grouped layout and ``conv2_tower0/1`` of our towers are one layer) and
shape, through `alexnet_tf.pretrained.convert`'s `step_weights` / `set_step_weights`: a grouped
kernel's output filters are split between the towers, Caffe's group ``t`` going to tower ``t``.
fc8, the head, is re-initialised when its class count differs from the new data's. One line
says what was loaded, re-initialised and skipped.

The mean: the source's ViewNormalization (its training data's mean) is not loaded; the run
normalises with the new data's mean, as every run does (`alexnet_tf.input.pipeline`). The
features then see the new photos centred as the source's saw its own, which is the natural
choice for new data; Caffe's fine-tuning examples keep the ImageNet mean file instead. For
photos like ImageNet's the two means differ by a few grey levels, a shift conv1's biases take up.

Only a new run is initialised: a resumed run restores its checkpoint, which holds the weights,
and says that ``finetune.init_from`` is not read again. The source is recorded with the recipe
(``RUN/recipe.yaml``), so a re-run with another source is refused as a different recipe.
"""

from __future__ import annotations

import dataclasses
import posixpath

import keras
import tensorflow as tf

from alexnet_tf import paper, runs
from alexnet_tf.errors import InputError
from alexnet_tf.network.layers import LocalResponseNormalization, network_of
from alexnet_tf.network.model import NO_PADDING
from alexnet_tf.pretrained.caffe import CONVOLUTION, INNER_PRODUCT
from alexnet_tf.pretrained.convert import Step, network_steps, set_step_weights, step_weights
from alexnet_tf.recipe import Recipe
from alexnet_tf.runs import CHECKPOINTS


@dataclasses.dataclass(frozen=True)
class Source:
    """A loaded SOURCE: the resolved ``.keras`` path and its network (float images in)."""

    path: str
    network: keras.Model


def source_for_new_run(recipe: Recipe, model_dir: str, overwrite: bool) -> Source | None:
    """The checked source when the run will start afresh; None without ``finetune.init_from``,
    or when the run directory holds a checkpoint to resume (the source is then not read)."""
    source = recipe.finetune.init_from
    if source is None:
        return None
    # Any checkpoint's index file: the loop resumes from it (or, if all are damaged, loads the
    # source then); the state file is not read, as it may be the garbled one the loop rebuilds.
    if not overwrite and tf.io.gfile.glob(posixpath.join(model_dir, CHECKPOINTS, "*.index")):
        return None
    return load_source(source, recipe)


def load_source(source: str, recipe: Recipe) -> Source:
    """Loads ``source`` (`alexnet_tf.runs.load_model`) and `check_fits` it to ``recipe``."""
    try:
        path, model = runs.load_model(source)
    except InputError as error:
        raise InputError(f"--init-from {error}") from None
    network = network_of(model)
    check_fits(path, network, recipe)
    return Source(path, network)


def check_fits(path: str, network: keras.Model, recipe: Recipe) -> None:
    """`InputError` naming every way ``network``'s architecture differs from ``recipe``'s, each
    with the recipe key that would make them agree."""
    model = recipe.model
    steps = {step.name: step for step in network_steps(network)}
    if "conv1" not in steps or "conv2" not in steps or "fc8" not in steps:
        raise InputError(f"--init-from {path}: not an AlexNet of alexnet-tf (no conv1, conv2 or fc8 layer)")
    differences = []
    filters = sum(layer.filters for layer in steps["conv1"].layers)
    towers = paper.NUM_TOWERS if model.two_towers else 1
    wanted = max(1, round(paper.CONV1[0] * model.channel_multiplier / towers)) * towers
    if filters != wanted:
        differences.append(
            f"conv1 has {filters} filters, the recipe's {wanted} (set model.channel_multiplier="
            f"{filters / paper.CONV1[0]:g})"
        )
    conv2 = steps["conv2"].layers
    split = len(conv2) == paper.NUM_TOWERS or conv2[0].groups == paper.NUM_TOWERS
    if split != model.two_towers:
        differences.append(f"{'two towers' if split else 'one tower'} (set model.two_towers={str(split).lower()})")
    lrn = [layer for layer in network.layers if isinstance(layer, LocalResponseNormalization)]
    if bool(lrn) != model.local_response_normalization:
        differences.append(
            f"{'with' if lrn else 'without'} LRN (set model.local_response_normalization={str(bool(lrn)).lower()})"
        )
    elif lrn and lrn[0].variant != model.lrn_variant:
        differences.append(f"LRN variant {lrn[0].variant!r} (set model.lrn_variant={lrn[0].variant})")
    padded = tuple(map(tuple, network.get_layer("conv1_pad").padding)) != NO_PADDING
    if padded != model.pad_input:
        differences.append(
            f"conv1 input {'padded' if padded else 'not padded'} (set model.pad_input={str(padded).lower()})"
        )
    size = network.input_shape[1]
    if size != recipe.input.crop_size:
        differences.append(f"{size}x{size} input (set input.crop_size={size})")
    scaled = any(layer.name == "input_scale" for layer in network.layers)
    if scaled != (model.initialization == "he"):
        wanted_init = "he" if scaled else "paper"
        differences.append(f"{'an' if scaled else 'no'} input_scale layer (set model.initialization={wanted_init})")
    if differences:
        raise InputError(f"--init-from {path}: does not fit the recipe: {'; '.join(differences)}")


def initialize(network: keras.Model, source: Source) -> str:
    """Sets ``network``'s weighted layers from ``source``'s of the same name and shape; returns
    the summary line. fc8 keeps its fresh initialisation when the class counts differ."""
    available = {step.name: step for step in _weighted(source.network)}
    loaded, reinitialised, parameters = [], [], 0
    for step in _weighted(network):
        found = available.pop(step.name, None)
        if found is None:
            reinitialised.append(f"{step.name} (not in the source)")
            continue
        kernel, biases = step_weights(found)
        shape = _shape(step)
        if kernel.shape != shape:
            if step.name == "fc8":
                reinitialised.append(f"fc8 ({shape[-1]} classes; the source has {kernel.shape[-1]})")
                continue
            raise InputError(
                f"--init-from {source.path}: {step.name} has a kernel of {kernel.shape}, this run's {shape}; "
                "the architectures differ"
            )
        set_step_weights(step, kernel, biases)
        loaded.append(step.name)
        parameters += kernel.size + biases.size
    skipped = ", ".join(available) or "nothing"
    return (
        f"initialised from {source.path}: loaded {', '.join(loaded) or 'nothing'} ({parameters:,} parameters); "
        f"re-initialised {', '.join(reinitialised) or 'nothing'}; skipped {skipped}"
    )


def _weighted(network: keras.Model) -> list[Step]:
    return [step for step in network_steps(network) if step.type in (CONVOLUTION, INNER_PRODUCT)]


def _shape(step: Step) -> tuple[int, ...]:
    """The kernel shape of ``step`` as one layer (towers' output filters together)."""
    shapes = [tuple(layer.kernel.shape) for layer in step.layers]
    return (*shapes[0][:-1], sum(shape[-1] for shape in shapes))
