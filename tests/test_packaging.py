"""Installing the package into an environment that has its dependencies
(a Colab runtime with TensorFlow, Keras and keras-hub, or this one)
installs the package alone: the requirements are lower bounds."""

import json
import subprocess
import sys

from tests.tools.test_tools import ROOT


def test_install_keeps_the_installed_dependencies(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-build-isolation",
            "--report",
            str(report),
            ROOT,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    assert [item["metadata"]["name"] for item in installs] == [
        "keras-performer"
    ]
