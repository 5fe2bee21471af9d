"""Setup script for keras_performer."""

import pathlib
import re

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent
# The one repository address: the notebooks' Colab badges and install cells
# use it too (tests/tutorials/test_notebook_links.py).
URL = "https://github.com/keras-performer/keras-performer"
# The version is written once, in the package (setup.py cannot import it:
# its dependencies may not be installed yet).
VERSION = re.search(
    r'^__version__ = "([^"]+)"$',
    (HERE / "keras_performer" / "__init__.py").read_text(encoding="utf-8"),
    re.MULTILINE,
).group(1)
# Each pin is a range of releases the tests have run on.
BACKENDS = {
    "jax": ["jax>=0.10,<0.11", "jaxlib>=0.10,<0.11"],
    # On Linux x86_64, PyPI's torch is the CUDA build (GBs); the CPU build
    # comes from https://download.pytorch.org/whl/cpu.
    "torch": ["torch>=2.13,<2.14"],
}
TUTORIAL_REQUIREMENTS = ["tensorflow-datasets>=4.9,<5", "matplotlib"]
TOOL_REQUIREMENTS = [
    "absl-py>=2,<3",
    "matplotlib",
    "nbformat",
    "nbclient",
    "ipykernel",
    "mlxtend",
]
# The tests also run the tutorials (Jupyter kernel), the tools and the
# backend-agnostic tests on every backend.
TEST_REQUIREMENTS = (
    ["pytest", "pytest-xdist", "hypothesis"]
    + TUTORIAL_REQUIREMENTS
    + TOOL_REQUIREMENTS
    + BACKENDS["jax"]
    + BACKENDS["torch"]
)

setup(
    name="keras-performer",
    version=VERSION,
    description=(
        "Performer (FAVOR+) linear attention layers for Keras 3 and TensorFlow."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    url=URL,
    project_urls={"Tutorials": URL + "/tree/main/tutorials"},
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_performer", "keras_performer.*"]),
    # Keras and NumPy are the core; TensorFlow is the default backend and
    # the one of export, tf.distribute and the tutorials (keras-hub needs it
    # on Linux too, through tensorflow-text).
    # Lower bounds only, at the oldest releases the tests have run on
    # (keras-hub's practice): a runtime that has them (Colab) keeps its own.
    # Below them: Keras 3.14's MultiHeadAttention has no `sliding_window`;
    # keras-hub 0.31's ByteTokenizer fails on an empty string (and 0.32
    # needs tensorflow-text 2.20, so TensorFlow 2.20).
    install_requires=[
        "keras>=3.15",
        "keras-hub>=0.32",
        "numpy>=2",
        "tensorflow>=2.20",
    ],
    extras_require={
        **BACKENDS,
        "tutorials": TUTORIAL_REQUIREMENTS,
        "tools": TOOL_REQUIREMENTS,
        "tests": TEST_REQUIREMENTS,
        "dev": TEST_REQUIREMENTS + ["ruff"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
