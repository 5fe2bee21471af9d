"""PerformerTokenizer: how `Tokenizer.from_preset` finds a Performer
preset's tokenizer."""

import json
import os

import keras
import keras_hub

from keras_performer.models.performer_backbone import PerformerBackbone
from keras_performer.models.special_tokens import has_file_assets


@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerTokenizer(keras_hub.tokenizers.Tokenizer):
    """The tokenizer entry of Performer presets.

    Performer models take any keras-hub tokenizer, so no tokenizer class
    belongs to `PerformerBackbone`; keras-hub finds a preset's tokenizer
    through such a class. `PerformerTokenizer.from_preset(directory)`
    returns the tokenizer a local preset was saved with, of its own class
    (a `keras_hub.tokenizers.ByteTokenizer`, a `WordPieceTokenizer`, ...),
    vocabulary included; `keras_hub.tokenizers.Tokenizer.from_preset`
    does the same for tokenizers with vocabulary files (keras-hub's loader
    cannot load one without, as the byte tokenizer). The class itself
    makes no tokenizer.

    Example:

    >>> directory = os.path.join(tempfile.mkdtemp(), "preset")
    >>> keras_performer.models.PerformerBackbone(
    ...     vocabulary_size=256, num_layers=1, num_heads=2, hidden_dim=8,
    ...     intermediate_dim=16,
    ... ).save_to_preset(directory)
    >>> keras_performer.models.PerformerCausalLMPreprocessor(
    ...     keras_hub.tokenizers.ByteTokenizer(), add_start_token=False,
    ...     add_end_token=False,
    ... ).save_to_preset(directory)
    >>> tokenizer = keras_performer.models.PerformerTokenizer.from_preset(
    ...     directory)
    >>> type(tokenizer).__name__
    'ByteTokenizer'
    """

    backbone_cls = PerformerBackbone

    @classmethod
    def from_preset(cls, preset, config_file="tokenizer.json", **kwargs):
        """The tokenizer saved in a local preset directory."""
        path = os.path.join(preset, config_file)
        if not os.path.isfile(path):
            raise ValueError(
                f"`preset` must be a preset directory with a {config_file}. "
                f"Received: preset={preset!r}"
            )
        with open(path) as file:
            config = json.load(file)
        config["config"].update(kwargs)
        tokenizer = keras.saving.deserialize_keras_object(config)
        if has_file_assets(tokenizer):
            tokenizer.load_preset_assets(preset)
        return tokenizer

    def __init__(self, *args, **kwargs):
        raise ValueError(
            "PerformerTokenizer only loads the tokenizer of a Performer "
            "preset (PerformerTokenizer.from_preset(directory)); build a "
            "keras-hub tokenizer (e.g. keras_hub.tokenizers.ByteTokenizer()) "
            "to make one. Received: PerformerTokenizer(...)"
        )
