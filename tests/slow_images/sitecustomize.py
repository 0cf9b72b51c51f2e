"""Test hook of tests/test_prepare_beam.py: every image conversion takes `DELAY` seconds longer.

A Beam job's work happens in worker processes that its runner starts (the DirectRunner's
``multi_processing`` mode runs ``python -m apache_beam.runners.worker.sdk_worker_main``), where a
test cannot patch anything. But every Python process imports `sitecustomize` at start-up by
itself, from the first folder on ``sys.path`` that has one, and the workers inherit the launcher's
environment: so this folder on ``PYTHONPATH`` slows the launcher and all its workers alike, and
the test can kill -9 the job while it is writing shards (on this tiny dataset it would otherwise
be done before anyone could).
"""

import time

from alexnet_tf.prepare import images

DELAY = 0.3
_convert = images.prepare_image


def _slow(*args, **kwargs):
    time.sleep(DELAY)
    return _convert(*args, **kwargs)


images.prepare_image = _slow
