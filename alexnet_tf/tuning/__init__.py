"""``alexnet-tf tune``: a keras-tuner search whose every trial is a real `alexnet_tf.training.fit.fit`.

* `alexnet_tf.tuning.space`: the search space (``section.key`` ranges, a small YAML file);
* `alexnet_tf.tuning.search`: the tuner, the resumable search, its table and the best recipe.
"""
