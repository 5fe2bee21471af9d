"""Every python block of the README runs as written, on its own (a fresh
namespace each, in a fresh directory, on the TensorFlow backend: the
export blocks need it)."""

import os
import re
import subprocess
import sys

from tests.tools.test_tools import ROOT

RUNNER = """
import sys, traceback
blocks = {blocks!r}
failed = []
for i, block in enumerate(blocks):
    try:
        code = compile(block, f"README block {{i}}", "exec")
        exec(code, {{"__name__": "__main__"}})
    except Exception:
        failed.append(i)
        traceback.print_exc()
print("failed blocks:", failed)
sys.exit(1 if failed else 0)
"""


def readme_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        return re.findall(r"```python\n(.*?)```", file.read(), re.S)


def test_readme_blocks_run(tmp_path):
    blocks = readme_blocks()
    assert len(blocks) >= 10
    done = subprocess.run(
        [sys.executable, "-c", RUNNER.format(blocks=blocks)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": ROOT},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "failed blocks: []" in done.stdout
    # What the blocks write, where they say.
    for path in ("my_performer", "models/encoder/1", "models/lm/1"):
        assert os.path.exists(tmp_path / path), path
