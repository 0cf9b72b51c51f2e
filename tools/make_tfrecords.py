"""``python tools/make_tfrecords.py SOURCE OUTPUT [options]``: the same as ``alexnet-tf prepare-data``.

A thin script for those who run the tools from a checkout (with the package installed,
``pip install -e .``); the logic is `alexnet_tf.prepare.convert.prepare_dataset`. See ``--help``
and the README.
"""

import sys

from alexnet_tf.cli import main

if __name__ == "__main__":
    main(["prepare-data", *sys.argv[1:]], prog_name="make_tfrecords.py")
