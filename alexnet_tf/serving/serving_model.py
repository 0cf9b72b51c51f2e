"""A trained model as a classifier of encoded images, with the evaluation preprocessing in the graph.

`fit` saves the model *on views* (``with_view_normalization``): a `ViewNormalization` layer
holding the dataset's mean image, then the network. `ServingModel` takes it apart and puts the
evaluation path around it as TensorFlow ops, so the SavedModel (`alexnet_tf.serving.export`) and
``alexnet-tf predict`` compute the same numbers as evaluation does for the same image:

1. refuse an image whose header claims more than ``max_pixels`` pixels, before decoding it
   (`alexnet_tf.serving.image_headers`), then decode (`tf.io.decode_image`: JPEG, PNG, GIF, BMP;
   grayscale and CMYK JPEGs come out RGB — TF's JPEG decoder converts CMYK and Adobe-inverted
   CMYK itself);
2. §2: shorter side to 256 and the central 256×256, with the input pipeline's own
   `resize_and_center_crop`, which resamples only the central patch (skipped for an image that
   is already 256×256, as the pipeline does);
3. the centre 224×224 view, or §4.1's ten views (an export option);
4. the trained `ViewNormalization` (centre offsets, mirror bits of the ten views, zero lighting);
5. the network, rebuilt in float32 without device placement (`inference_parts`); softmax, averaged over the views.

Outputs (`OUTPUT_KEYS`): ``probabilities`` ``[b, C]`` float32, and the top k classes as
``top_k_indices`` (int32), ``top_k_probabilities``, ``top_k_wnids`` and ``top_k_names`` (strings
looked up in two asset files, ``wnids.txt`` and ``names.txt``, that travel inside the SavedModel).

A batch holding something that is not an image, or an image over the pixel limit, fails as a
whole with ``InvalidArgument`` naming the image's position (a JPEG, PNG, GIF or BMP header is
checked first); a corrupt image with a valid header fails with the decoder's own
``InvalidArgument`` message. So each image of a request costs memory in proportion to
``max_pixels`` at most, whatever its file claims: TF Serving runs every model in one process.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from alexnet_tf.constants import DEFAULT_MAX_PIXELS
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.input import augment
from alexnet_tf.network.layers import FLIP, IMAGE, LIGHTING, OFFSET, ViewNormalization
from alexnet_tf.network.model import outputs_logits, place_towers
from alexnet_tf.records import schema
from alexnet_tf.records.metadata import ClassInfo
from alexnet_tf.serving.image_headers import decoded_pixels, has_known_format

# Signature names (Model Garden's names for the three input kinds) and their input keys.
IMAGE_BYTES_SIGNATURE = "serving_default"
IMAGE_TENSOR_SIGNATURE = "image_tensor"
TF_EXAMPLE_SIGNATURE = "tf_example"
IMAGE_BYTES_INPUT = "image_bytes"
IMAGE_TENSOR_INPUT = "images"
TF_EXAMPLE_INPUT = "examples"

PROBABILITIES = "probabilities"
TOP_K_INDICES = "top_k_indices"
TOP_K_PROBABILITIES = "top_k_probabilities"
TOP_K_WNIDS = "top_k_wnids"
TOP_K_NAMES = "top_k_names"
OUTPUT_KEYS = (PROBABILITIES, TOP_K_INDICES, TOP_K_PROBABILITIES, TOP_K_WNIDS, TOP_K_NAMES)

WNIDS_ASSET = "wnids.txt"
NAMES_ASSET = "names.txt"

# The words of the pixel-limit error; `alexnet_tf.serving.predict` finds the numbers after them.
TOO_MANY_PIXELS = "pixels to decode, more than the limit of"


class ServingModel:
    """The network, its `ViewNormalization` and the class names, as graph-friendly functions.

    Each ``classify_*`` method maps a batch to the `OUTPUT_KEYS` dict using TensorFlow ops
    only, so it can be traced as a serving signature (`signatures`) or called through
    `tf.function` in-process (``alexnet-tf predict`` on a ``.keras`` file).

    Args:
        network: the float32 inference network (`inference_parts`), images → softmax or logits.
        normalization: the trained `ViewNormalization` (float32).
        classes: one per output unit, in index order (`alexnet_tf.classes.load_classes`).
        assets_dir: a local directory that holds the class-name files for the lookup tables;
            an export copies them into the SavedModel's ``assets/``, so it may be temporary.
        top_k: classes listed per image (at most the number of classes).
        ten_crop: average the softmax over §4.1's ten views instead of using the centre view.
        max_pixels: an encoded image whose header claims more pixels is refused before it is
            decoded (for a GIF, all frames count: TF's decoder reads them all).
    """

    def __init__(
        self,
        network: keras.Model,
        normalization: ViewNormalization,
        classes: Sequence[ClassInfo],
        assets_dir: str,
        top_k: int = 5,
        ten_crop: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if top_k < 1:
            raise InputError(f"top_k={top_k}: must be at least 1")
        if max_pixels < 1:
            raise invalid("max_pixels", max_pixels, "a positive integer")
        self.max_pixels = max_pixels
        self.network = network
        self.normalization = normalization
        self.num_classes = len(classes)
        self.top_k = min(top_k, self.num_classes)
        self.ten_crop = ten_crop
        self.image_size = normalization.image_size
        self.crop_size = network.input_shape[1]
        self.outputs_logits = outputs_logits(network)
        self.wnids = _lookup_table(posixpath.join(assets_dir, WNIDS_ASSET), [c.wnid for c in classes])
        self.names = _lookup_table(posixpath.join(assets_dir, NAMES_ASSET), [c.name for c in classes])
        # The evaluation views, laid out as the input pipeline lays them out for ViewNormalization.
        if ten_crop:
            corners = augment.ten_crop_offsets(self.image_size, self.crop_size)
            self._offsets = tf.constant(corners * 2, tf.int32)
            self._flips = tf.constant([False] * len(corners) + [True] * len(corners))
        else:
            self._offsets = augment.center_offset(self.image_size, self.crop_size)[tf.newaxis]
            self._flips = tf.constant([False])

    @property
    def trackables(self) -> list:
        """What a SavedModel must track besides the functions: the layers and the lookup tables."""
        return [self.network, self.normalization, self.wnids, self.names]

    def signatures(self) -> dict[str, tuple[Callable, list[tf.TensorSpec]]]:
        """``{signature name: (function, input signature)}`` for the three serving signatures."""
        crop = self.crop_size
        return {
            IMAGE_BYTES_SIGNATURE: (
                self.classify_image_bytes,
                [tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)],
            ),
            IMAGE_TENSOR_SIGNATURE: (
                self.classify_images,
                [tf.TensorSpec([None, crop, crop, 3], tf.float32, name=IMAGE_TENSOR_INPUT)],
            ),
            TF_EXAMPLE_SIGNATURE: (
                self.classify_examples,
                [tf.TensorSpec([None], tf.string, name=TF_EXAMPLE_INPUT)],
            ),
        }

    def classify_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded images ``[b]`` (JPEG, PNG, GIF, BMP) → outputs."""
        views = tf.map_fn(
            self._views_of_encoded,
            (image_bytes, tf.range(tf.shape(image_bytes)[0])),
            fn_output_signature=tf.TensorSpec([len(self._flips), self.crop_size, self.crop_size, 3], tf.uint8),
        )
        return self._outputs(self._probabilities_of_views(views))

    def classify_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Prepared views ``[b, crop, crop, 3]`` float32, already mean-subtracted → outputs.

        Another shape fails with ``InvalidArgument`` naming the expected one: TF Serving feeds
        a request's tensor without checking it against the signature's declared shape.
        """
        images = tf.ensure_shape(images, [None, self.crop_size, self.crop_size, 3])
        return self._outputs(self._probabilities(images))

    def classify_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        """Serialized `tf.train.Example` records ``[b]`` in prepare-data's schema → outputs."""
        features = tf.io.parse_example(examples, {schema.ENCODED: tf.io.FixedLenFeature([], tf.string)})
        return self.classify_image_bytes(features[schema.ENCODED])

    # --- Pieces ---------------------------------------------------------------------------

    def _views_of_encoded(self, item: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        """One encoded image → its uint8 views ``[views, crop, crop, 3]``."""
        data, index = item
        check = tf.debugging.Assert(
            has_known_format(data),
            [tf.strings.format("image {} of the request is not a JPEG, PNG, GIF or BMP image", index)],
        )
        with tf.control_dependencies([check]):
            name = tf.strings.format("image {} of the request", index)
            square = decode_square(data, self.image_size, self.max_pixels, name)
        if self.ten_crop:
            patches = augment.five_crop(square, self.crop_size)
            return tf.concat([patches, patches], axis=0)  # mirrored by ViewNormalization (the flips)
        return augment.crop_window(square, self._offsets[0], self.crop_size)[tf.newaxis]

    def _probabilities_of_views(self, views: tf.Tensor) -> tf.Tensor:
        """uint8 views ``[b, v, crop, crop, 3]`` → softmax averaged over the views ``[b, C]``."""
        batch = tf.shape(views)[0]
        count = len(self._flips)
        normalized = self.normalization(
            {
                IMAGE: views,
                OFFSET: tf.tile(self._offsets[tf.newaxis], [batch, 1, 1]),
                FLIP: tf.tile(self._flips[tf.newaxis], [batch, 1]),
                LIGHTING: tf.zeros([batch, count, 3]),
            }
        )
        flat = tf.reshape(normalized, [-1, self.crop_size, self.crop_size, 3])
        per_view = tf.reshape(self._probabilities(flat), [batch, count, self.num_classes])
        return tf.reduce_mean(per_view, axis=1)

    def _probabilities(self, images: tf.Tensor) -> tf.Tensor:
        outputs = tf.cast(self.network(images, training=False), tf.float32)
        return tf.nn.softmax(outputs) if self.outputs_logits else outputs

    def _outputs(self, probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        top = tf.math.top_k(probabilities, self.top_k)
        keys = tf.cast(top.indices, tf.int64)
        return {
            PROBABILITIES: probabilities,
            TOP_K_INDICES: top.indices,
            TOP_K_PROBABILITIES: top.values,
            TOP_K_WNIDS: self.wnids.lookup(keys),
            TOP_K_NAMES: self.names.lookup(keys),
        }


def decode_square(
    data: tf.Tensor, size: int, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | tf.Tensor = "the image"
) -> tf.Tensor:
    """Encoded image → RGB uint8 ``[size, size, 3]``: §2's rescale and central crop.

    An image whose header claims more than ``max_pixels`` pixels fails with ``InvalidArgument``
    (``"<name> has N pixels to decode, more than the limit of M"``) before it is decoded.
    `tf.io.decode_image` gives RGB for grayscale, palette and alpha PNGs, GIFs (first frame),
    BMPs, and CMYK JPEGs (TF's JPEG decoder converts CMYK, Adobe-inverted or not, itself).
    An image already ``size``² is used as it is, as the input pipeline does.
    """
    pixels = decoded_pixels(data)
    refusal = " has {} " + TOO_MANY_PIXELS + " {} (the export's max_pixels)"
    check = tf.debugging.Assert(
        pixels <= max_pixels, [tf.strings.join([name, tf.strings.format(refusal, (pixels, max_pixels))])]
    )
    with tf.control_dependencies([check]):
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = tf.ensure_shape(decoded, [None, None, 3])
    shape = tf.shape(image)
    fits = (shape[0] == size) & (shape[1] == size)
    square = tf.cond(fits, lambda: image, lambda: augment.resize_and_center_crop(image, size))
    return tf.ensure_shape(square, [size, size, 3])


def inference_parts(model: keras.Model, source: str) -> tuple[keras.Model, ViewNormalization]:
    """The network and `ViewNormalization` of a model on views (what `fit` saves), for inference.

    Both are rebuilt from their configs in float32 with the trained weights copied over: no
    ``tower_devices`` (device strings from training would otherwise be baked into every exported
    function) and float32 arithmetic and outputs even when training used a mixed-precision
    policy. Dropout stays in the network but is the identity at ``training=False``, the only
    way the serving functions call it.
    """
    normalizations = [layer for layer in model.layers if isinstance(layer, ViewNormalization)]
    networks = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(normalizations) != 1 or len(networks) != 1:
        raise InputError(
            f"{source}: expected a model on views (a ViewNormalization layer and the network, as "
            "`alexnet-tf fit` saves it); this one has neither or several"
        )
    return place_towers(networks[0], None, dtype="float32"), float32_normalization(normalizations[0])


def float32_normalization(layer: ViewNormalization) -> ViewNormalization:
    """A float32 copy of a trained `ViewNormalization` (its mean image included)."""
    copy = ViewNormalization.from_config({**layer.get_config(), "dtype": "float32"})
    copy.build(None)  # its weights exist from __init__; Keras' export wants the layer marked built
    if layer.mean_values is not None:
        copy.set_mean(layer.mean_values.numpy())
    return copy


def _lookup_table(path: str, values: Sequence[str]) -> tf.lookup.StaticHashTable:
    """Line number → line of a text file written at ``path``, tracked as a SavedModel asset."""
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(f"{value}\n" for value in values))
    initializer = tf.lookup.TextFileInitializer(
        tf.saved_model.Asset(path),
        key_dtype=tf.int64,
        key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        value_dtype=tf.string,
        value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
    )
    return tf.lookup.StaticHashTable(initializer, default_value="")
