"""The paper's constants, in one place, each with the section it comes from.

Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012. Every default elsewhere in alexnet-tf that reproduces
the paper refers to a name here; a deviation is a named option at its use site,
never an edit of this file.
"""

# §2 The dataset: "down-sampled the images to a fixed resolution of 256 × 256".
IMAGE_SIZE = 256
NUM_CLASSES = 1000

# §3.5 / Figure 2: the input to the first layer is a 224 × 224 × 3 patch (§4.1).
CROP_SIZE = 224
# §3.5: convolution kernels (filters, kernel size, stride) per layer, summed over both towers.
CONV1 = (96, 11, 4)
CONV2 = (256, 5, 1)
CONV3 = (384, 3, 1)
CONV4 = (384, 3, 1)
CONV5 = (256, 3, 1)
FC_UNITS = 4096
# §3.2 / Figure 2: two towers ("GPUs"); conv2, conv4 and conv5 see only their own tower.
NUM_TOWERS = 2

# §3.3 Local response normalisation, after the ReLU of conv1 and conv2:
# b = a / (k + alpha * sum over n adjacent maps of a^2) ** beta. alpha is NOT divided by n
# (Caffe's and PyTorch's LRN divide it; the paper's formula does not).
LRN_K = 2.0
LRN_N = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75

# §3.4 Overlapping pooling: z × z windows with stride s, s < z.
POOL_SIZE = 3
POOL_STRIDE = 2

# §4.1 Data augmentation.
PCA_LIGHTING_STD = 0.1  # alpha_i ~ N(0, 0.1), drawn once per image per pass.
TEST_VIEWS = 10  # four corner + centre patches, and their reflections.

# §4.2 Dropout in the first two fully connected layers.
DROPOUT_RATE = 0.5

# §5 Details of learning.
BATCH_SIZE = 128
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4  # inside the momentum: v <- 0.9 v - 0.0005 eps w - eps dL/dw (an L2 term).
LEARNING_RATE = 0.01
LR_DECAY_FACTOR = 0.1  # "divide the learning rate by 10 when the validation error ... stopped improving"
LR_DECAYS = 3  # "reduced three times prior to termination"
EPOCHS = 90  # "roughly 90 cycles through the training set"
INIT_STDDEV = 0.01  # weights ~ N(0, 0.01)
# Biases initialised to 1 "in the second, fourth, and fifth convolutional layers, as well as in
# the fully-connected hidden layers"; 0 elsewhere.
BIAS_ONE_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})
