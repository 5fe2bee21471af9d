"""PerformerCausalLMPreprocessor: strings to the causal LM's inputs."""

import keras
import keras_hub
import numpy as np

from keras_performer.layers.performer_options import fill_docstring
from keras_performer.models import special_tokens
from keras_performer.models.performer_backbone import PerformerBackbone
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.checks import host_value


@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerCausalLMPreprocessor(
    special_tokens.SpecialTokens, keras_hub.models.CausalLMPreprocessor
):
    """Tokenizes and packs text for `PerformerCausalLM`.

    A `keras_hub.models.CausalLMPreprocessor` for any keras-hub tokenizer.
    Called on strings it returns `(x, y, sample_weight)`: `x` the dict of
    `"token_ids"` and `"padding_mask"` (`sequence_length` each), `y` the
    next token at each position, `sample_weight` `0` where `y` is padding.
    `generate_preprocess` and `generate_postprocess` serve
    `PerformerCausalLM.generate`; the first raises `ValueError` for a
    prompt (read outside `tf.data`) with no token or with more than the
    sequence length.

    Args:
        tokenizer: a `keras_hub.tokenizers.Tokenizer`.
        sequence_length: int. Length of the packed sequences. Defaults to
            `1024`.
        add_start_token: bool. Whether to put the start token before each
            text. Defaults to `True`.
        add_end_token: bool. Whether to put the end token after each
            training text. Defaults to `True`.
        {special_tokens}
        **kwargs: base layer arguments.

    Example:

    >>> preprocessor = keras_performer.models.PerformerCausalLMPreprocessor(
    ...     keras_hub.tokenizers.ByteTokenizer(), sequence_length=8,
    ...     start_token_id=256, end_token_id=257,
    ... )
    >>> x, y, sample_weight = preprocessor(["hi"])
    >>> np.asarray(x["token_ids"]).tolist()
    [[256, 104, 105, 257, 0, 0, 0, 0]]
    """

    backbone_cls = PerformerBackbone

    def __init__(
        self,
        tokenizer,
        sequence_length=1024,
        add_start_token=True,
        add_end_token=True,
        start_token_id=None,
        end_token_id=None,
        pad_token_id=None,
        **kwargs,
    ):
        check_positive_int("sequence_length", sequence_length)
        super().__init__(
            tokenizer=tokenizer,
            sequence_length=sequence_length,
            add_start_token=add_start_token,
            add_end_token=add_end_token,
            **kwargs,
        )
        self._set_special_tokens(start_token_id, end_token_id, pad_token_id)

    def build(self, input_shape):
        # Without a token to add, the packer gets none (keras-hub's
        # generation preprocessing would add a start token regardless).
        start = self._special_token_id("start_token_id", self.add_start_token)
        end = self._special_token_id("end_token_id", self.add_end_token)
        self.packer = keras_hub.layers.StartEndPacker(
            start_value=start if self.add_start_token else None,
            end_value=end if self.add_end_token else None,
            pad_value=self.pad_token_id,
            sequence_length=self.sequence_length,
            return_padding_mask=True,
        )
        self.built = True

    def generate_preprocess(self, x, sequence_length=None):
        """Strings to `{"token_ids", "padding_mask"}` of `sequence_length`
        (defaults to the preprocessor's), for generation: no end token."""
        sequence_length = sequence_length or self.sequence_length
        # One position more, to tell a prompt that fills the sequence from
        # one that is cut.
        packed = super().generate_preprocess(x, sequence_length + 1)
        lengths = host_value(packed["padding_mask"])
        if lengths is not None:
            lengths = np.sum(lengths, axis=-1)
            if lengths.size and lengths.max() > sequence_length:
                raise ValueError(
                    f"A prompt has {lengths.max()} tokens, more than the "
                    f"generated length: max_length={sequence_length}. "
                    "Received: prompt token counts "
                    f"{np.ravel(lengths).tolist()}"
                )
            if lengths.size and lengths.min() == 0:
                raise ValueError(
                    "A prompt has no token: generation continues a prompt "
                    "of at least one token (a start token, with "
                    "add_start_token=True). Received: prompt token counts "
                    f"{np.ravel(lengths).tolist()}"
                )
        return {
            key: value[..., :sequence_length] for key, value in packed.items()
        }

    def generate_postprocess(self, x):
        """Token ids and padding mask to strings, special tokens removed
        (this preprocessor's as well as the tokenizer's)."""
        token_ids = keras.ops.convert_to_numpy(x["token_ids"])
        keep = keras.ops.convert_to_numpy(x["padding_mask"]).astype(bool)
        keep &= ~np.isin(token_ids, self.special_token_ids)
        return super().generate_postprocess(
            {"token_ids": token_ids, "padding_mask": keep}
        )

    def get_config(self):
        config = super().get_config()
        config.update(self._special_token_config())
        return config


fill_docstring(
    PerformerCausalLMPreprocessor, "special_tokens", special_tokens.DOCS
)
