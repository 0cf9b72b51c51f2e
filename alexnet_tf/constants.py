"""Names and numbers that more than one layer of the package needs, in one low module.

Why a module of its own: these values are shared across layers (the network and the input
pipeline, the recipe and the model, prepare-data and the model, the library and the command
line's option defaults), and a shared value read from the module of one user made the others
import it: prepare-data imported the Keras model to read the number 64, and ``alexnet-tf --help``
loaded TensorFlow to show the default split. So this module imports nothing, and everything may
import it. It is not `alexnet_tf.paper`: that module holds only the paper's own values, and
these are choices, derived bounds and our defaults. The modules that own each concept keep the
old names importable (`alexnet_tf.network.layers.MEAN_MODES`, `alexnet_tf.network.model.MIN_INPUT_SIZE`,
`alexnet_tf.training.distribute.STRATEGIES`, `alexnet_tf.records.schema.TRAIN`, ...).
"""

# --- The network ---------------------------------------------------------------------------

# The smallest input whose maps survive the three 3×3/2 poolings (pool5 at least 1×1): the
# smallest crop a recipe may ask for and the smallest image prepare-data may store.
MIN_INPUT_SIZE = 64

# `AlexNet(initialization=...)` and ``model.initialization``: "paper" is §5's; "he" is a named
# deviation for small data.
INITIALIZATIONS = ("paper", "he")

# `LocalResponseNormalization(variant=...)` and `AlexNet(lrn_variant=...)`: §3.3's formula, or
# Caffe's (alpha divided by the window size; with k = 1 in Caffe's bvlc_alexnet), a named variant
# for imported weights.
LRN_PAPER = "paper"
LRN_CAFFE = "caffe"
LRN_VARIANTS = (LRN_PAPER, LRN_CAFFE)

# Caffe's bvlc_alexnet takes a 227×227 crop and convolves it without padding
# (`AlexNet(pad_input=False)`); ours pads the paper's 224 to 227.
CAFFE_CROP_SIZE = 227

# What `ViewNormalization`, the input pipeline and ``input.mean`` subtract from each view.
MEAN_IMAGE = "image"  # §2: "subtracting the mean activity over the training set from each pixel".
MEAN_CHANNEL = "channel"  # named deviation: one mean per RGB channel (Caffe, most ports).
MEAN_NONE = "none"  # raw 0–255 RGB, for models that normalize inside and for show-augment.
MEAN_MODES = (MEAN_IMAGE, MEAN_CHANNEL, MEAN_NONE)

# --- Data and devices ----------------------------------------------------------------------

# The splits of a prepared dataset (the shard names' prefixes; see `alexnet_tf.records.schema`).
TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)

# `alexnet_tf.training.distribute` strategies, and those of one process (what a caller that runs several
# fits in turn can use).
STRATEGIES = ("one-device", "mirrored", "multi-worker", "tpu", "two-tower")
SINGLE_WORKER_STRATEGIES = ("one-device", "mirrored", "two-tower")
# multi-worker: how long a worker waits for the others to start (`alexnet_tf.training.cluster`), in seconds.
WORKER_TIMEOUT_ENV = "ALEXNET_TF_WORKER_TIMEOUT"
DEFAULT_WORKER_TIMEOUT = 600.0

# --- Training ------------------------------------------------------------------------------

# ``training.mixed_precision``: Keras policies, "none" for float32, and "auto", decided at the
# start of a run from the hardware (`alexnet_tf.training.precision`).
AUTO_PRECISION = "auto"
MIXED_PRECISION = (AUTO_PRECISION, "none", "mixed_bfloat16", "mixed_float16")

# --- Evaluation ----------------------------------------------------------------------------

# `alexnet_tf.evaluate`'s precisions: "float32" computes what `export` serves, "trained" the
# run's own dtype policy (bfloat16 or float16 arithmetic for a mixed-precision run).
EVALUATE_PRECISIONS = ("float32", "trained")

# --- Defaults of prepare-data and show-augment ---------------------------------------------

# Model Garden's ImageNet shard counts (~1,250 train and ~390 validation records per shard).
DEFAULT_TRAIN_SHARDS = 1024
DEFAULT_VALIDATION_SHARDS = 128
# Pillow's own default bomb limit (about 89.5 M pixels: 1 GiB of 24-bit pixels / 4), far above
# the size of photos in ImageNet. Also the serving graph's default (export/predict --max-pixels).
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_JPEG_QUALITY = 90

# Where prepare-data and index-records run their shard tasks (`alexnet_tf.prepare.runners`): this
# machine's process pool, or an Apache Beam job (the optional [beam] extra).
LOCAL_RUNNER = "local"
BEAM_RUNNER = "beam"
RUNNERS = (LOCAL_RUNNER, BEAM_RUNNER)

# show-augment's grid (`alexnet_tf.input.visualize`).
DEFAULT_AUGMENT_LIGHTING_STRENGTH = 10.0  # ×paper.PCA_LIGHTING_STD: shifts of tens of levels, visible.
DEFAULT_AUGMENT_IMAGES = 4
DEFAULT_AUGMENT_VIEWS = 9
