"""Start, end and padding ids of the preprocessors, for any tokenizer."""

import json
import os

import keras
import numpy as np

DOCS = """\
start_token_id: int. Id put before each text. Defaults to `None`: the
    tokenizer's `start_token_id`. A tokenizer with none of its own
    (`keras_hub.tokenizers.ByteTokenizer`) takes an id past its
    vocabulary (e.g. `256`), and the backbone a vocabulary that holds it.
end_token_id: int. Id put after each text, and where generation stops.
    Defaults to `None`: the tokenizer's `end_token_id`.
pad_token_id: int. Id of padding. Defaults to `None`: the tokenizer's
    `pad_token_id`, or `0` for a tokenizer with none (the byte tokenizer
    drops `0` when it detokenizes)."""


class SpecialTokens:
    """Mixin of the preprocessors: the special ids given to the
    constructor, or else the tokenizer's (read when needed: a tokenizer
    loaded from a preset gets its vocabulary after construction)."""

    def _set_special_tokens(self, start_token_id, end_token_id, pad_token_id):
        for name, value in (
            ("start_token_id", start_token_id),
            ("end_token_id", end_token_id),
            ("pad_token_id", pad_token_id),
        ):
            if value is not None and (
                not isinstance(value, (int, np.integer)) or value < 0
            ):
                raise ValueError(
                    f"`{name}` must be a non-negative int or None. "
                    f"Received: {name}={value!r}"
                )
        self._special_token_arguments = {
            "start_token_id": start_token_id,
            "end_token_id": end_token_id,
            "pad_token_id": pad_token_id,
        }

    def _special_token_id(self, name, needed):
        value = self._special_token_arguments[name]
        if value is None:
            value = getattr(self.tokenizer, name, None)
        if value is None and needed:
            raise ValueError(
                f"{type(self.tokenizer).__name__} has no `{name}`: give the "
                f"preprocessor one (e.g. {name}="
                f"{self.tokenizer.vocabulary_size()}, an id past the "
                "tokenizer's vocabulary) or leave the token out "
                f"(add_{name[:-3]}=False). Received: {name}=None"
            )
        return value

    @property
    def start_token_id(self):
        """The id put before each text, or `None`."""
        return self._special_token_id("start_token_id", False)

    @property
    def end_token_id(self):
        """The id put after each text, or `None`."""
        return self._special_token_id("end_token_id", False)

    @property
    def pad_token_id(self):
        """The id of padding."""
        value = self._special_token_id("pad_token_id", False)
        return 0 if value is None else value

    @property
    def special_token_ids(self):
        """The ids generation strips from its output: the tokenizer's
        special tokens and this preprocessor's."""
        ids = set(getattr(self.tokenizer, "special_token_ids", []))
        ids.update({self.start_token_id, self.end_token_id, self.pad_token_id})
        return sorted(i for i in ids if i is not None)

    def vocabulary_size(self):
        """Token ids the preprocessor can emit: the tokenizer's vocabulary
        and the special ids past it; `None` while the tokenizer has no
        vocabulary yet (loading from a preset)."""
        size = tokenizer_vocabulary_size(self.tokenizer)
        if size is None:
            return None
        return max([size - 1, *self.special_token_ids]) + 1

    def save_to_preset(self, preset_dir):
        """Saves the preprocessor and its tokenizer to a preset directory."""
        if has_file_assets(self.tokenizer):
            return super().save_to_preset(preset_dir)
        # keras-hub's saver writes every tokenizer's vocabulary files, and
        # fails on one that has none (the byte tokenizer): its config is
        # all of it.
        os.makedirs(preset_dir, exist_ok=True)
        for layer, config_file in (
            (self, self.config_file),
            (self.tokenizer, self.tokenizer.config_file),
        ):
            config = keras.saving.serialize_keras_object(layer)
            config.pop("build_config", None)
            with open(os.path.join(preset_dir, config_file), "w") as file:
                json.dump(config, file, indent=4)

    def load_preset_assets(self, preset):
        if has_file_assets(self.tokenizer):
            super().load_preset_assets(preset)

    def _special_token_config(self):
        return dict(self._special_token_arguments)


def tokenizer_vocabulary_size(tokenizer):
    """A tokenizer's vocabulary size, or `None` while it has no vocabulary
    (loading from a preset)."""
    try:
        return int(tokenizer.vocabulary_size())
    except (AttributeError, TypeError, ValueError):
        return None


def has_file_assets(tokenizer):
    """Whether a tokenizer keeps files (a vocabulary) in presets."""
    return bool(getattr(tokenizer, "file_assets", None))


def check_vocabulary(backbone, preprocessor):
    """Raises `ValueError` when the preprocessor emits other ids than the
    backbone's embedding takes."""
    if preprocessor is None:
        return
    if isinstance(preprocessor, SpecialTokens):
        size = preprocessor.vocabulary_size()
    else:  # keras-hub's own preprocessors: their tokenizers' ids.
        size = tokenizer_vocabulary_size(
            getattr(preprocessor, "tokenizer", None)
        )
    if size is not None and size != backbone.vocabulary_size:
        raise ValueError(
            "The preprocessor's tokenizer and special tokens make "
            f"{size} token ids, the backbone embeds vocabulary_size="
            f"{backbone.vocabulary_size}: they must match. Received: "
            f"tokenizer={type(preprocessor.tokenizer).__name__} with "
            f"vocabulary_size()={preprocessor.tokenizer.vocabulary_size()}, "
            "special token ids "
            f"{getattr(preprocessor, 'special_token_ids', None)}"
        )
