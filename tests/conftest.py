import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# lrtdense.keras's tests and the docstring walk import Keras in this process: JAX unless told
# otherwise (Keras' own default, TensorFlow, is not a test dependency)
os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the demo trains or the study starts (bad arguments or paths must stop
    them before)."""
    from lrtdense import demo
    from lrtdense.studies import variance

    def fail(*args, **kwargs):
        raise AssertionError("the work started")
    monkeypatch.setattr(demo, "fit", fail)
    monkeypatch.setattr(variance, "_run", fail)
