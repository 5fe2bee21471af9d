"""The notebooks' Colab badges and install cells point at the repository
address of setup.py, and the install cell prints versions and devices."""

import os
import re

import nbformat

from tests.tools.test_tools import ROOT

NOTEBOOKS = ("image_generation.ipynb", "text_classification.ipynb")


def setup_url():
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as file:
        return re.search(r'^URL = "([^"]+)"$', file.read(), re.M).group(1)


def test_one_repository_address():
    url = setup_url()
    repository = url.removeprefix("https://github.com/")
    for name in NOTEBOOKS:
        notebook = nbformat.read(os.path.join(ROOT, "tutorials", name), 4)
        badge = notebook.cells[0].source
        assert (
            f"colab.research.google.com/github/{repository}/blob/main/"
            f"tutorials/{name}" in badge
        ), name
        install = notebook.cells[1].source
        assert f"keras-performer @ git+{url}" in install, name
        assert "__version__" in install and "list_logical_devices" in install
