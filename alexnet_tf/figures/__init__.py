"""Pictures of a trained run: conv1 filters (Figure 3), fc7 nearest neighbours (Figure 4), curves.

* `alexnet_tf.figures.sheet`: images placed at exact pixel positions, written as a PNG;
* `alexnet_tf.figures.filters`: ``show-filters``, conv1's kernels per tower and their colour;
* `alexnet_tf.figures.neighbours`: ``neighbours``, training images nearest in fc7 space;
* `alexnet_tf.figures.curves`: ``plot``, loss, errors and learning rate from ``history.csv``.
"""
