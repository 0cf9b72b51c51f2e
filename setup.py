"""Packaging for alexnet-tf.

TensorFlow is an extra, not a plain requirement, because it comes as two wheels:
``pip install ".[cpu]"`` takes ``tensorflow-cpu`` (no CUDA download) and
``pip install ".[gpu]"`` takes ``tensorflow[and-cuda]``. Installing without either
extra assumes TensorFlow 2.21 is already present.
"""

from setuptools import find_packages, setup

TF_VERSION = "==2.21.*"

setup(
    name="alexnet-tf",
    version="0.1.0",
    description="A faithful, fast TensorFlow/Keras 3 reproduction of AlexNet (Krizhevsky et al., 2012).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # pipelines/ (the experiment recipes) is installed as alexnet_tf.pipelines, so that the
    # built-in recipes (`--pipeline demo`) exist after a plain `pip install .`.
    packages=[*find_packages(include=["alexnet_tf", "alexnet_tf.*"]), "alexnet_tf.pipelines"],
    package_dir={"alexnet_tf.pipelines": "pipelines"},
    package_data={"alexnet_tf.pipelines": ["*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.10,<4",
        "keras-tuner[bayesian]>=1.4",  # [bayesian]: scipy and scikit-learn, for `alexnet-tf tune --algorithm bayesian`
        "numpy>=1.26",
        "click>=8.1",
        "pillow>=10.0",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "pyyaml>=6",
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu{TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]{TF_VERSION}"],
        "test": ["pytest>=8", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["alexnet-tf=alexnet_tf.cli:main"]},
)
