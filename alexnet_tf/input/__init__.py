"""The online `tf.data` input pipeline over prepared records (the paper's §2 and §4.1).

* `pipeline`: `InputConfig` and `InputPipeline`, the one object a run holds: train and eval
  datasets for an input context, and the matching `ViewNormalization` layer;
* `options`: `InputOptions`, the transformation's options (also the recipe's input section);
* `shards`: which files each input pipeline reads, and the parallel interleave;
* `service`: fit's training input from a tf.data service;
* `decode`: `RecordDecoder`, records to labels and uint8 images (or only the crop window);
* `bad_records`: shards read in order and image headers checked before decoding, so a bad
  record is named (shard and number) in one line, or left out and counted;
* `views`: the float views and the uint8 views for `ViewNormalization` (one interface);
* `augment`: the paper's augmentation as pure, seedable functions on one image;
* `visualize`: ``alexnet-tf show-augment``'s picture of what the network sees.
"""
