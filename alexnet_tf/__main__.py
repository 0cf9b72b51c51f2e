"""``python -m alexnet_tf`` is the ``alexnet-tf`` command."""

from alexnet_tf.cli import main

main()
