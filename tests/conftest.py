"""Shared test set-up: quiet TensorFlow logs before TensorFlow is imported; the full-size model."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def full_model():
    """The paper's full-size model (built once): only for tests where its size is the point."""
    from alexnet_tf import AlexNet

    return AlexNet(seed=1)
