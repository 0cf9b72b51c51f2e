"""The random streams of prepare-data: one named id per seeded choice, all drawn from ``--seed``.

Each choice draws from ``numpy.random.default_rng([seed, stream, ...])`` with its own stream id,
so the choices are independent and changing one option (say ``--limit-per-class``) leaves the
others as they were. The ids are part of what makes an output reproducible: never renumber one.
"""

import enum

from alexnet_tf.records.schema import TRAIN, VALIDATION


class Stream(enum.IntEnum):
    TRAIN_SHARDS = 0  # the shuffle of the training split before it is dealt into shards
    VALIDATION_SHARDS = 1  # the same for the validation split
    VAL_FRACTION = 2  # which files of each class --val-fraction moves to validation
    LIMIT_TRAIN = 3  # which files of each class --limit-per-class keeps, training split
    LIMIT_VALIDATION = 4  # the same, validation split
    STATS_SAMPLE = 5  # which training files --stats-sample computes the statistics over

    @classmethod
    def shards(cls, split: str) -> "Stream":
        return {TRAIN: cls.TRAIN_SHARDS, VALIDATION: cls.VALIDATION_SHARDS}[split]
