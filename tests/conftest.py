"""Shared test set-up: quiet TensorFlow logs before TensorFlow is imported; two logical CPUs for
the whole session; the full-size model."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def two_logical_cpus() -> None:
    """Splits the CPU into two logical devices, once, before the session's first test.

    The mirrored and two-tower tests (test_train.py) need two devices, and TensorFlow fixes its
    devices when its runtime starts (the first op in the process) and refuses to change them
    after. A fixture of those tests alone would come after other files' tests had started the
    runtime; a call at a test file's import made the run depend on which files were collected and
    in what order (and gave other files two devices only when test_train.py was among them). So it
    is done here, for every session, before any test: every test sees the same two devices,
    whichever files are selected. Test files must not run TensorFlow ops at import time. Tests that
    need another device layout run it in a fresh process (as test_evaluate.py and test_model.py do).
    """
    from alexnet_tf.training import distribute

    distribute.configure_devices(2)


@pytest.fixture(scope="session")
def full_model():
    """The paper's full-size model (built once): only for tests where its size is the point."""
    from alexnet_tf import AlexNet

    return AlexNet(seed=1)
