"""`InputOptions`: how the input pipeline transforms records, the one definition of each option,
its default and its check.

It is both the recipe's ``input`` section (`alexnet_tf.recipe`) and the part of
`alexnet_tf.input.pipeline.InputConfig` a recipe may set (`InputConfig` adds what a run supplies:
the data directory, the global batch, the image dtype, the seed). Imports no TensorFlow, so recipe
errors answer before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses

from alexnet_tf import paper
from alexnet_tf.constants import MEAN_IMAGE, MEAN_MODES, MIN_INPUT_SIZE
from alexnet_tf.data_service import is_address
from alexnet_tf.errors import invalid


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputOptions:
    """The pipeline's transformation of records; defaults are the paper's (or ours, where it is
    silent). `InvalidArgument` (`alexnet_tf.errors.invalid`) names an impossible value.

    Attributes:
      shuffle_buffer: records held by the shuffle buffer (not in the paper; 10,000 serialized
        256×256 records take about 250 MB).
      label_offset: subtracted from ``image/class/label``. None uses the metadata's offset, giving
        0-based class indices for either convention; 0 keeps Model Garden's 1..N labels as they
        are (for a 1001-way model with a background class).
      mean: "image" (§2: the per-pixel mean image), "channel" (a per-channel mean) or "none".
      lighting_strength: multiplies §4.1's alpha standard deviation (paper.PCA_LIGHTING_STD);
        1.0 is the paper, 0 turns PCA lighting off.
      crop_size: side of the training and test patches (§4.1: 224; at least AlexNet's smallest
        input).
      normalize_in_model: True (default, what fit, evaluate and the recipes use): the pipeline
        stops at the uint8 crop and yields ``({"image", "offset", "flip", "lighting"}, labels)``,
        and the model finishes the views with the `ViewNormalization` layer from
        `InputPipeline.view_normalization` (mirror, cast, mean, lighting), on the training
        device. False: the pipeline does everything and yields float images. Same distribution
        of views; the uint8 path takes 30–35% less host CPU per image and a quarter of the bytes
        per batch; the views drawn for a given seed differ between the two modes. See
        `alexnet_tf.network.layers`.
      deterministic: keep element order fixed (slower: a slow record holds up the others); with
        a seed the batches are identical run to run.
      data_service: where fit's training pipeline runs: a tf.data service dispatcher,
        ``grpc://HOST:PORT``, whose workers run it (`alexnet_tf.input.service`); None: the
        training process. `InputPipeline` itself ignores it.
    """

    shuffle_buffer: int = 10_000
    label_offset: int | None = None
    mean: str = MEAN_IMAGE  # §2
    lighting_strength: float = 1.0  # §4.1
    crop_size: int = paper.CROP_SIZE  # §4.1
    normalize_in_model: bool = True
    deterministic: bool = False
    data_service: str | None = None

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 1:
            raise invalid("shuffle_buffer", self.shuffle_buffer, "a positive integer")
        if self.label_offset is not None and self.label_offset < 0:
            raise invalid("label_offset", self.label_offset, "null or an integer >= 0")
        if self.mean not in MEAN_MODES:
            raise invalid("mean", self.mean, f"one of {', '.join(MEAN_MODES)}")
        if self.lighting_strength < 0:
            raise invalid("lighting_strength", self.lighting_strength, ">= 0 (0 turns lighting off)")
        if self.crop_size < MIN_INPUT_SIZE:
            raise invalid("crop_size", self.crop_size, f"an integer >= {MIN_INPUT_SIZE} (AlexNet's smallest input)")
        if self.data_service is not None and not is_address(self.data_service):
            raise invalid("data_service", self.data_service, "null or a dispatcher's address, grpc://HOST:PORT")

    def options(self) -> dict[str, object]:
        """These options alone (without a subclass's fields), by name."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(InputOptions)}
