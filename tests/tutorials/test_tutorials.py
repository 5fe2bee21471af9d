"""The tutorials, run top to bottom in a Jupyter kernel as a reader runs
them, with small settings in place of the parameter cell's and
`tfds.testing.mock_data` in place of the downloads (no dataset host is
reachable here). The notebooks' own code is what runs."""

import os
import re

import nbclient
import nbformat

from tests.tools.test_tools import ROOT


def run_notebook(name, parameters, directory, mock_examples):
    """Executes `tutorials/<name>` in `directory`; returns its text output."""
    notebook = nbformat.read(os.path.join(ROOT, "tutorials", name), 4)
    (index,) = [
        i
        for i, cell in enumerate(notebook.cells)
        if "parameters" in cell.metadata.get("tags", [])
    ]
    overrides = "\n".join(
        f"{key} = {value!r}" for key, value in parameters.items()
    )
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(overrides))
    notebook.cells.insert(
        0,
        nbformat.v4.new_code_cell(
            "import tensorflow_datasets as tfds\n"
            "_mock_data = tfds.testing.mock_data("
            f"num_examples={mock_examples})\n"
            "_mock_data.__enter__()"
        ),
    )
    nbclient.NotebookClient(
        notebook,
        timeout=1200,
        kernel_name="python3",
        resources={"metadata": {"path": str(directory)}},
    ).execute()
    return "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


# The settings both tutorials share, at their smallest.
TINY_MODEL = dict(
    EPOCHS=1,
    BATCH_SIZE=8,
    NUM_LAYERS=1,
    NUM_HEADS=2,
    HIDDEN_DIM=16,
    NUM_RANDOM_FEATURES=8,
    REDRAW_INTERVAL=1,
)


def redraws(text):
    """The number of redraws a notebook printed."""
    return int(re.search(r"(\d+) redraws of the random features", text)[1])


def number_after(text, words):
    return float(re.search(re.escape(words) + r"\s*([-+.e\d]+)", text).group(1))


def test_image_generation(tmp_path):
    output_dir = os.path.join(tmp_path, "out")
    text = run_notebook(
        "image_generation.ipynb",
        dict(
            TRAIN_EXAMPLES=16,
            TEST_EXAMPLES=8,
            **TINY_MODEL,
            NUM_SAMPLES=2,
            REDRAW_FRACTION=0.5,
            OUTPUT_DIR=output_dir,
        ),
        tmp_path,
        mock_examples=16,
    )
    assert number_after(text, "baseline:") > 0
    assert number_after(text, "test:") > 0
    # 2 steps (16 digits in batches of 8), redraws in the first half only.
    assert redraws(text) == 1
    assert number_after(text, "differ by at most") < 1e-4
    assert number_after(text, "exact attention") > 0
    for name in ("samples.png", "completions.png", "saved_model"):
        assert os.path.exists(os.path.join(output_dir, name)), name


def tiny_bert_preset(directory):
    """A keras-hub BERT preset as the hub serves one (a backbone and its
    tokenizer, no task), tiny and random: presets cannot be downloaded
    here."""
    import keras_hub

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the"]
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=32,
    ).save_to_preset(directory)
    keras_hub.models.BertTokenizer(vocabulary=vocabulary).save_to_preset(
        directory
    )
    return directory


def test_text_classification(tmp_path):
    output_dir = os.path.join(tmp_path, "out")
    bert_preset = tiny_bert_preset(str(tmp_path / "bert_preset"))
    text = run_notebook(
        "text_classification.ipynb",
        dict(
            TRAIN_EXAMPLES=32,
            TEST_EXAMPLES=16,
            VALIDATION_EXAMPLES=8,
            VOCABULARY_SIZE=200,
            SEQUENCE_LENGTH=32,
            **TINY_MODEL,
            TIMING_LENGTH=64,
            BERT_PRESET=bert_preset,
            CONVERSION_LENGTH=96,  # three times the preset's 32 positions
            CONVERSION_BATCH_SIZE=4,
            CONVERSION_STEPS=2,
            OUTPUT_DIR=output_dir,
        ),
        tmp_path,
        mock_examples=32,
    )
    for words in (
        "Performer test accuracy:",
        "exact attention test accuracy:",
        "converted BERT test accuracy:",
    ):
        assert 0 <= number_after(text, words) <= 1
    assert redraws(text) == 3  # 32 - 8 training reviews in batches of 8
    assert "PerformerBertTextClassifier reads up to 96 tokens" in text
    assert "reloaded as PerformerBertTextClassifier" in text
    assert number_after(text, "its logits differ by at most") < 1e-5
    assert number_after(text, "differ by at most") < 1e-4
    assert number_after(text, "tokens: Performer") > 0
    for name in (
        "comparison.png",
        "learning_curves.png",
        "saved_model",
        "performer_bert",
    ):
        assert os.path.exists(os.path.join(output_dir, name)), name
