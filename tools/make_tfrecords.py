"""``python tools/make_tfrecords.py SOURCE OUTPUT [options]``: the same as ``alexnet-tf prepare-data``.

A thin script for those who run the tools from a checkout; the logic is
`alexnet_tf.data.prepare.prepare_dataset`. See ``--help`` and the README's "Preparing data".
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alexnet_tf.cli import main

if __name__ == "__main__":
    main(["prepare-data", *sys.argv[1:]], prog_name="make_tfrecords.py")
