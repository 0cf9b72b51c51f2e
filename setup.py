"""The one packaging detail pyproject.toml cannot say: which packages, and where one of them lives.

pipelines/ (the experiment recipes) stays at the top level of the repository, where users find
it, and is installed as ``alexnet_tf.pipelines``, so that the built-in recipes (``--recipe
demo``) exist after a regular ``pip install .`` and an editable ``pip install -e .`` alike.
The ILSVRC-2012 class list of `alexnet_tf.pretrained` is package data. Everything else (metadata,
dependencies, extras, the console script) is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["alexnet_tf", "alexnet_tf.*"]), "alexnet_tf.pipelines"],
    package_dir={"alexnet_tf.pipelines": "pipelines"},
    package_data={"alexnet_tf.pipelines": ["*.yaml"], "alexnet_tf.pretrained": ["*.txt"]},
)
