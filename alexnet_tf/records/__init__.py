"""The record format: the contract between the writer (`alexnet_tf.prepare`) and the readers
(`alexnet_tf.input`, and other tools such as TF Model Garden).

* `schema`: the `tf.train.Example` keys (Model Garden / TF-Slim ImageNet schema), shard names;
* `metadata`: ``metadata.json`` (classes, splits, shards, skipped files, statistics) and
  ``mean_image.npy`` beside the shards.
"""
