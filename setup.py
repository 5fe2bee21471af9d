"""Setup script for keras_performer."""

import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent
# The tests also run the tutorials (Jupyter kernel) and the tools.
TEST_REQUIREMENTS = [
    "pytest",
    "hypothesis",
    "matplotlib",
    "nbformat",
    "nbclient",
    "ipykernel",
    "mlxtend",
]

setup(
    name="keras-performer",
    version="0.1.0",
    description=(
        "Performer (FAVOR+) linear attention layers for Keras 3 and TensorFlow."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_performer", "keras_performer.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15",
        "tensorflow-text>=2.21.1",
        "tensorflow-datasets",
        "keras-hub>=0.32",
        "absl-py",
        "numpy",
    ],
    extras_require={
        "tools": ["matplotlib", "nbformat", "mlxtend"],
        "tests": TEST_REQUIREMENTS,
        "dev": TEST_REQUIREMENTS + ["ruff"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
