"""The built-in experiment recipes, installed with the package as ``alexnet_tf.pipelines``.

``alexnet-tf fit --recipe demo`` (or ``paper``) names one of the ``*.yaml`` files here; any
other value of ``--recipe`` is a path to a recipe file of your own.
"""
