"""The examples in the docstrings run, on every backend they are for."""

import doctest
import importlib
import os
import pkgutil
import tempfile

import keras
import keras_hub
import numpy as np
import pytest

import keras_performer

MODULES = [
    module.name
    for module in pkgutil.walk_packages(
        keras_performer.__path__, "keras_performer."
    )
    if not module.ispkg
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name.startswith("keras_performer.export."):
        if keras.backend.backend() != "tensorflow":
            pytest.skip("SavedModel export needs the TensorFlow backend")
    import tensorflow as tf

    globs = {
        "keras": keras,
        "keras_hub": keras_hub,
        "keras_performer": keras_performer,
        "np": np,
        "os": os,
        "tempfile": tempfile,
        "tf": tf,
    }
    if name.startswith("keras_performer.export."):
        importlib.import_module("keras_performer.export")
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, globs=globs):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
