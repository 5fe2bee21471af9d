import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests: a few examples each in CI, many by hand
# (HYPOTHESIS_PROFILE=thorough). No deadline: the first call of an op
# traces it.
# The other backends run 4 examples: JAX compiles every op for every new
# shape, a few seconds an example.
settings.register_profile("ci", max_examples=12, deadline=None)
settings.register_profile("ci_other_backends", max_examples=4, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(
    os.environ.get(
        "HYPOTHESIS_PROFILE",
        "ci"
        if keras.backend.backend() == "tensorflow"
        else "ci_other_backends",
    )
)

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow", action="store_true", help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    skip_tensorflow = pytest.mark.skip(
        reason=f"uses TensorFlow directly; backend {keras.backend.backend()}"
    )
    for item in items:
        slow = "slow" in item.keywords or (
            "slow_off_tensorflow" in item.keywords
            and keras.backend.backend() != "tensorflow"
        )
        if slow and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if (
            "tensorflow" in item.keywords
            and keras.backend.backend() != "tensorflow"
        ):
            item.add_marker(skip_tensorflow)


if keras.backend.backend() == "torch":
    import torch

    # NumPy cannot read a PyTorch tensor that carries autograd history
    # (every layer output does) or is bfloat16: the tests read it detached,
    # bfloat16 as float32.
    _to_array = torch.Tensor.__array__

    def _detached_array(self, dtype=None, copy=None):
        tensor = self.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return _to_array(tensor, dtype)

    torch.Tensor.__array__ = _detached_array


@pytest.fixture(autouse=True)
def fixed_seed():
    """Same initial weights in every run of a test."""
    keras.utils.set_random_seed(0)


@pytest.fixture
def golden():
    with np.load(os.path.join(DATA_DIR, "favor_reference.npz")) as data:
        return dict(data)


@pytest.fixture
def mixed_policy(request):
    """Sets the dtype policy named by the test's parameter, then resets it."""
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy("float32")
