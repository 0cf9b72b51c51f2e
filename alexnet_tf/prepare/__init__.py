"""The offline jobs: ``alexnet-tf prepare-data`` (image folders to TFRecord shards) and
``alexnet-tf index-records`` (metadata for records other tools wrote, read in place).

Pillow and worker processes, no TensorFlow graph (TF is used for file I/O and record writing).

* `convert`: `prepare_dataset(PrepareConfig)`, the whole job, resumable;
* `sources`: listing ImageNet's layouts or any folder-per-class set, labels and class names;
* `images`: decoding any image (CMYK, grayscale, PNG-as-JPEG...) to §2's 256×256 RGB JPEG;
* `shards`: which files go into which shard, and writing one shard;
* `stats`: exact training-set pixel statistics (mean image, RGB covariance);
* `workers`: a small process pool; `resume`: the state that makes a run restartable;
* `runners`: ``--runner local`` (the pool) or ``beam``; `beam_runner`: the tasks as an Apache Beam
  job (imported only for ``--runner beam``: Apache Beam is an optional extra);
* `streams`: the named random streams drawn from ``--seed``;
* `index`: `index_records(IndexConfig)`, the whole index job, resumable; `layout`: finding the
  shards, schema and class names of an existing directory; `scan`: reading one shard.
"""
