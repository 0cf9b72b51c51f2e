"""The AlexNet model of Krizhevsky, Sutskever & Hinton (2012), as a Keras 3 functional model.

Layer names are stable so that checkpoints, export and the tuner can rely on them:

* two towers (the default, the paper's Figure 2): ``conv1_pad``, then for each tower ``t`` in
  0, 1: ``conv1_tower{t}``, ``lrn1_tower{t}``, ``pool1_tower{t}``, ``conv2_tower{t}``,
  ``lrn2_tower{t}``, ``pool2_tower{t}``; ``conv3_input`` (both towers' pool2 maps),
  ``conv3_tower{t}``, ``conv4_tower{t}``, ``conv5_tower{t}``, ``pool5_tower{t}``; then
  ``pool5``, ``flatten``, ``fc6``, ``dropout6``, ``fc7``, ``dropout7``, ``fc8``, ``predictions``;
* one tower, or the grouped-convolution layout: the same names without ``_tower{t}``;
* ``initialization="he"`` adds ``input_scale`` before ``conv1_pad``;
* ``pad_input=False`` keeps ``conv1_pad`` with zero padding, so the names do not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from alexnet_tf import paper
from alexnet_tf.constants import INITIALIZATIONS, LRN_CAFFE, LRN_PAPER, LRN_VARIANTS, MIN_INPUT_SIZE
from alexnet_tf.errors import InputError, invalid
from alexnet_tf.network.layers import LocalResponseNormalization, TowerConv2D, TowerMaxPooling2D

# conv1 pads 1 pixel before and 2 after (top/left, bottom/right) so that a 224×224 input gives
# the paper's 55×55 maps: (224 + 3 - 11) / 4 + 1 = 55. This is the "227×227" input of Caffe
# and of most reproductions, reached by zero-padding the paper's 224 crop; the odd total puts
# the larger half after, as TensorFlow's SAME padding does.
CONV1_PADDING = ((1, 2), (1, 2))
NO_PADDING = ((0, 0), (0, 0))

# The LRN layers' settings per `AlexNet(lrn_variant=...)`: §3.3's, or Caffe's bvlc_alexnet's
# (its prototxt sets local_size 5, alpha 1e-4, beta 0.75 and leaves k at Caffe's default, 1).
LRN_SETTINGS = {
    LRN_PAPER: {"k": paper.LRN_K, "variant": LRN_PAPER},
    LRN_CAFFE: {"k": 1.0, "variant": LRN_CAFFE},
}

# Suffix of each tower's layer names: conv1_tower0, lrn1_tower1, ...
TOWER_SUFFIX = "_tower"

# The spread of ImageNet pixel values (0–255 scale) about their mean, per channel about 58
# (the familiar 0.229, 0.224, 0.225 × 255); "he" divides the inputs by it.
PIXEL_STDDEV = 58.0


def AlexNet(
    num_classes: int = paper.NUM_CLASSES,
    input_size: int | tuple[int, int] = paper.CROP_SIZE,
    *,
    two_towers: bool = True,
    grouped_convolutions: bool = False,
    tower_devices: Sequence[str] | None = None,
    local_response_normalization: bool = True,
    lrn_variant: str = LRN_PAPER,
    pad_input: bool = True,
    dropout: float = paper.DROPOUT_RATE,
    channel_multiplier: float = 1.0,
    initialization: str = "paper",
    classifier_activation: str | None = "softmax",
    seed: int | None = None,
    name: str = "alexnet",
) -> keras.Model:
    """Builds AlexNet as in §3 and Figure 2 of the paper, with its §5 initialisation.

    conv1 96@11×11/4 → ReLU → LRN → max-pool 3/2 → conv2 256@5×5 → ReLU → LRN → pool →
    conv3 384@3×3 → conv4 384@3×3 → conv5 256@3×3 → pool → fc6 4096 → dropout → fc7 4096 →
    dropout → fc8 ``num_classes`` → softmax. At the defaults: 60,965,224 parameters and maps of
    55×55×96, 27×27×256, 13×13×384, 13×13×384, 13×13×256, 6×6×256.

    Two towers (§3.2): every convolutional layer is split in two halves, one per tower (one
    GPU each in the paper). conv2, conv4 and conv5 see only their own tower's maps; conv3 sees
    both towers' pool2 maps; LRN normalises within a tower (a tower cannot see the other's
    maps), and the fully connected layers see everything. The towers are separate
    convolutions rather than ``Conv2D(groups=2)``, which trains about 3× slower on CPU.

    Input: conv1 zero-pads the 224×224 crop to 227×227 (`CONV1_PADDING`): the paper states
    224×224 inputs yet 55×55 maps after an 11×11 stride-4 convolution, which only 227 gives.
    Inputs are channels-last RGB, already mean-subtracted by the input pipeline.

    Initialisation (§5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6 and fc7, 0
    elsewhere. With it, each layer passes on its input's variation scaled by about
    0.01·√fan_in (< 1 below fan-in 10,000) while the biases of 1 add a constant: measured on
    random inputs of pixel scale, the input-dependent part of the fc8 outputs is 0.35% of their
    size at full width and 0.01% at ``channel_multiplier=0.25`` (fan-ins shrink with it), so the net
    starts out predicting the same thing for every image and the gradients reaching the
    convolutions are tiny; it leaves that plateau only after many epochs (docs/training.md).
    ``initialization="he"`` is the named deviation for small data and narrow copies: all
    biases 0, weights N(0, 2/fan_in) (He et al., 2015: keeps the variation's scale through ReLU
    layers at any width), fc8 §5's N(0, 0.01) (small initial logits), and an ``input_scale``
    layer before conv1 dividing the 0–255-scale inputs by `PIXEL_STDDEV`: He's rule assumes
    unit-variance inputs, and with raw pixels conv1's gradients are ~58× larger relative to its
    weights, which diverges at any learning rate that trains the other layers (measured).

    Args:
        num_classes: units of fc8. Paper: 1000.
        input_size: side (or ``(height, width)``) of the input; at least 64. Paper: 224.
        two_towers: False builds the single-tower variant (conv2, conv4, conv5 see all maps;
            more parameters and about 1.57× the multiply-accumulates).
        grouped_convolutions: with two towers, use Caffe's layout instead of separate towers:
            one conv1 and conv3, ``Conv2D(groups=2)`` for conv2/4/5, and LRN across all 96 or
            256 maps. Same parameter count; slower on CPU. For comparison and Caffe weights.
        tower_devices: one device string per tower (e.g. ``["/GPU:0", "/GPU:1"]``) on which
            that tower's convolution, LRN and pooling layers (and their variables) live.
            Default: no placement. Requires separate towers.
        local_response_normalization: False drops both LRN layers (an ablation, §3.3).
        lrn_variant: "paper" (§3.3: k = 2, alpha multiplies the sum) or "caffe", the named
            variant of Caffe's bvlc_alexnet (k = 1, alpha divided by the window size; see
            `LocalResponseNormalization`). Paper: "paper".
        pad_input: True pads the input before conv1 (`CONV1_PADDING`: 224 → 227). False is
            the named option for Caffe's bvlc_alexnet, which takes a 227×227 crop
            (`alexnet_tf.constants.CAFFE_CROP_SIZE`) and convolves it unpadded; use it with
            ``input_size=227``. The evaluation and serving views are cut at the model's input
            size, so such a model is evaluated on 227 crops (centre offset (256 − 227) // 2 = 14).
        dropout: dropout rate after fc6 and fc7. Paper: 0.5 (§4.2).
        channel_multiplier: multiplier on every layer's channels and hidden units (not on
            ``num_classes``), for tiny, fast copies in tests and demos. Paper: 1.
        initialization: "paper" (§5) or "he" (see above). Paper: "paper".
        classifier_activation: activation of the ``predictions`` layer; None returns logits.
        seed: seed of the weight initialisers, for reproducible initial weights.
        name: model name.

    Returns:
        An uncompiled `keras.Model` taking float images ``(batch, height, width, 3)``.

    Reference:
        Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
        Neural Networks", NIPS 2012.
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if min(height, width) < MIN_INPUT_SIZE:
        raise invalid("input_size", input_size, f"at least {MIN_INPUT_SIZE}")
    if num_classes < 1:
        raise invalid("num_classes", num_classes, "at least 1")
    if not 0.0 <= dropout < 1.0:
        raise invalid("dropout", dropout, "in [0, 1)")
    if channel_multiplier <= 0:
        raise invalid("channel_multiplier", channel_multiplier, "positive")
    if initialization not in INITIALIZATIONS:
        raise invalid("initialization", initialization, f"one of {', '.join(INITIALIZATIONS)}")
    if lrn_variant not in LRN_VARIANTS:
        raise invalid("lrn_variant", lrn_variant, f"one of {', '.join(LRN_VARIANTS)}")
    if grouped_convolutions and not two_towers:
        raise invalid("grouped_convolutions", True, "False with two_towers=False (groups=2 is two towers)")
    num_towers = paper.NUM_TOWERS if two_towers else 1
    separate_towers = two_towers and not grouped_convolutions
    if tower_devices is not None and (not separate_towers or len(tower_devices) != num_towers):
        raise invalid(
            "tower_devices", tower_devices, f"None, or one device per tower ({paper.NUM_TOWERS}) with separate towers"
        )

    builder = _Builder(
        channel_multiplier=channel_multiplier,
        num_towers=num_towers,
        seed=seed,
        initialization=initialization,
        lrn_settings=LRN_SETTINGS[lrn_variant],
    )
    inputs = keras.Input(shape=(height, width, 3), name="images")
    x = inputs
    if initialization == "he":
        x = keras.layers.Rescaling(1.0 / PIXEL_STDDEV, name="input_scale")(x)
    x = keras.layers.ZeroPadding2D(CONV1_PADDING if pad_input else NO_PADDING, name="conv1_pad")(x)

    if separate_towers:
        devices = list(tower_devices) if tower_devices is not None else [None] * num_towers
        towers = [
            builder.features_to_pool2(x, lrn=local_response_normalization, tower=t, device=d)
            for t, d in enumerate(devices)
        ]
        conv3_input = keras.layers.Concatenate(name="conv3_input")(towers)
        towers = [builder.features_conv3_to_pool5(conv3_input, tower=t, device=d) for t, d in enumerate(devices)]
        x = keras.layers.Concatenate(name="pool5")(towers)
    else:
        groups = num_towers
        x = builder.features_to_pool2(x, lrn=local_response_normalization, groups=groups)
        x = builder.features_conv3_to_pool5(x, groups=groups)

    x = keras.layers.Flatten(name="flatten")(x)
    x = builder.dense(x, "fc6", builder.scaled(paper.FC_UNITS), activation="relu")
    x = keras.layers.Dropout(dropout, name="dropout6")(x)
    x = builder.dense(x, "fc7", builder.scaled(paper.FC_UNITS), activation="relu")
    x = keras.layers.Dropout(dropout, name="dropout7")(x)
    x = builder.dense(x, "fc8", num_classes, activation=None)
    if classifier_activation is not None:
        # float32 so the probabilities stay accurate under a mixed-precision policy.
        x = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, x, name=name)


class _Builder:
    """Creates AlexNet's layers with the paper's initialisation and the chosen multiplier and towers."""

    def __init__(
        self, channel_multiplier: float, num_towers: int, seed: int | None, initialization: str, lrn_settings: dict
    ) -> None:
        self.channel_multiplier = channel_multiplier
        self.initialization = initialization
        self.lrn_settings = lrn_settings
        self.num_towers = num_towers
        self.seed = seed
        self._layers_built = 0

    def scaled(self, units: int) -> int:
        return max(1, round(units * self.channel_multiplier))

    def _filters_per_tower(self, filters: int) -> int:
        return max(1, round(filters * self.channel_multiplier / self.num_towers))

    def _initializers(self, base_name: str) -> dict:
        seed = None if self.seed is None else self.seed + self._layers_built
        self._layers_built += 1
        if self.initialization == "he" and base_name != "fc8":
            kernel = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed)
            return {"kernel_initializer": kernel, "bias_initializer": "zeros"}
        bias = 1.0 if base_name in paper.BIAS_ONE_LAYERS else 0.0
        return {
            "kernel_initializer": keras.initializers.RandomNormal(0.0, paper.INIT_STDDEV, seed=seed),
            "bias_initializer": keras.initializers.Constant(bias),
        }

    def _suffix(self, tower: int | None) -> str:
        return "" if tower is None else f"{TOWER_SUFFIX}{tower}"

    def conv(
        self,
        x,
        base_name: str,
        spec: tuple[int, int, int],
        *,
        tower=None,
        device=None,
        groups: int = 1,
        padding: str = "same",
    ):
        filters, kernel_size, strides = spec
        # One tower's share of the filters, or all of them for a single (possibly grouped) conv.
        filters = self._filters_per_tower(filters) * (self.num_towers if tower is None else 1)
        layer = TowerConv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            groups=groups,
            activation="relu",
            device=device,
            name=base_name + self._suffix(tower),
            **self._initializers(base_name),
        )
        return layer(x)

    def lrn(self, x, base_name: str, *, tower=None, device=None):
        return LocalResponseNormalization(device=device, name=base_name + self._suffix(tower), **self.lrn_settings)(x)

    def pool(self, x, base_name: str, *, tower=None, device=None):
        return TowerMaxPooling2D(
            paper.POOL_SIZE, paper.POOL_STRIDE, device=device, name=base_name + self._suffix(tower)
        )(x)

    def features_to_pool2(self, x, *, lrn: bool, tower=None, device=None, groups: int = 1):
        """conv1 → LRN → pool1 → conv2 → LRN → pool2: one tower's half, or all maps."""
        where = {"tower": tower, "device": device}
        x = self.conv(x, "conv1", paper.CONV1, padding="valid", **where)
        if lrn:
            x = self.lrn(x, "lrn1", **where)
        x = self.pool(x, "pool1", **where)
        x = self.conv(x, "conv2", paper.CONV2, groups=groups, **where)
        if lrn:
            x = self.lrn(x, "lrn2", **where)
        return self.pool(x, "pool2", **where)

    def features_conv3_to_pool5(self, x, *, tower=None, device=None, groups: int = 1):
        """conv3 (sees both towers) → conv4 → conv5 → pool5 (own tower only)."""
        where = {"tower": tower, "device": device}
        x = self.conv(x, "conv3", paper.CONV3, **where)
        x = self.conv(x, "conv4", paper.CONV4, groups=groups, **where)
        x = self.conv(x, "conv5", paper.CONV5, groups=groups, **where)
        return self.pool(x, "pool5", **where)

    def dense(self, x, name: str, units: int, activation: str | None):
        return keras.layers.Dense(units, activation=activation, name=name, **self._initializers(name))(x)


def tower_of(layer_name: str) -> int | None:
    """The tower a layer of `AlexNet` belongs to (from its name), or None (shared layers)."""
    base, separator, tower = layer_name.rpartition(TOWER_SUFFIX)
    return int(tower) if separator and base and tower.isdigit() else None


def base_name(layer_name: str) -> str:
    """A layer's name without its tower suffix (``conv2_tower1`` → ``conv2``): the same name in
    both layouts."""
    return layer_name.rpartition(TOWER_SUFFIX)[0] if tower_of(layer_name) is not None else layer_name


def place_towers(network: keras.Model, tower_devices: Sequence[str] | None, dtype: str | None = None) -> keras.Model:
    """A copy of the `AlexNet` ``network`` with the same weights and each tower's layers (and
    their variables) on ``tower_devices[tower]``, or on no particular device with None.

    A saved network keeps the devices it was trained on (`alexnet_tf.network.layers.DevicePlacement`);
    this moves it: onto other devices for two-tower inference, or off them so a strategy (or a
    SavedModel) decides. ``dtype``, if given, replaces every layer's dtype policy (e.g. float32
    for serving a model trained in mixed precision).
    """
    config = network.get_config()
    towers = {tower_of(layer["config"]["name"]) for layer in config["layers"]} - {None}
    if tower_devices is not None and len(tower_devices) != len(towers):
        raise InputError(
            f"{network.name}: {len(towers)} separate towers, {len(tower_devices)} tower devices; placing towers "
            "needs a network built with two_towers=True and separate (not grouped) convolutions"
        )
    for layer in config["layers"]:
        layer_config = layer["config"]
        if "device" in layer_config:
            tower = tower_of(layer_config["name"])
            layer_config["device"] = None if tower_devices is None or tower is None else tower_devices[tower]
        if dtype is not None and "dtype" in layer_config:
            layer_config["dtype"] = dtype
    copy = keras.Model.from_config(config)
    copy.set_weights(network.get_weights())
    return copy


def placed_devices(network: keras.Model) -> set[str]:
    """The devices the layers of ``network`` are placed on (empty: none placed)."""
    return {layer.device for layer in network.layers if getattr(layer, "device", None) is not None}


def outputs_logits(network: keras.Model) -> bool:
    """Whether the last layer gives logits (True) or softmax probabilities (False)."""
    activation = getattr(network.layers[-1], "activation", None)
    if activation is keras.activations.softmax:
        return False
    if activation in (None, keras.activations.linear):
        return True
    raise InputError(
        f"the network's last layer {network.layers[-1].name!r} has activation {activation.__name__!r}; "
        "expected softmax probabilities or logits"
    )
