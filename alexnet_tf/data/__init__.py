"""Data: the TFRecord schema, dataset preparation, and the tf.data input pipeline."""
