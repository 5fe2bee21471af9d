"""PerformerTextClassifierPreprocessor: strings to the classifier's inputs."""

import keras
import keras_hub

# keras-hub's conversion of preprocessing inputs and outputs (TensorFlow on
# the CPU, then the backend's tensors), which its own preprocessors use: it
# has no public name.
from keras_hub.src.utils.tensor_utils import preprocessing_function

from keras_performer.layers.performer_options import fill_docstring
from keras_performer.models import special_tokens
from keras_performer.models.performer_backbone import PerformerBackbone
from keras_performer.ops.checks import check_positive_int


@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerTextClassifierPreprocessor(
    special_tokens.SpecialTokens, keras_hub.models.TextClassifierPreprocessor
):
    """Tokenizes and packs text for `PerformerTextClassifier`.

    A `keras_hub.models.TextClassifierPreprocessor` for any keras-hub
    tokenizer. Called on strings (and labels) it returns `(x, y,
    sample_weight)`, `x` the dict of `"token_ids"` and `"padding_mask"`:
    each text tokenized, between the start and end tokens (when there are
    any), cut or padded to `sequence_length`. A text longer than that is
    classified by its first tokens.

    Args:
        tokenizer: a `keras_hub.tokenizers.Tokenizer`.
        sequence_length: int. Length of the packed sequences. Defaults to
            `512`.
        {special_tokens}
        **kwargs: base layer arguments.

    Example:

    >>> preprocessor = (
    ...     keras_performer.models.PerformerTextClassifierPreprocessor(
    ...         keras_hub.tokenizers.ByteTokenizer(), sequence_length=6,
    ...     )
    ... )
    >>> x, y = preprocessor(["hi"], [1])
    >>> np.asarray(x["token_ids"]).tolist()
    [[104, 105, 0, 0, 0, 0]]
    >>> np.asarray(x["padding_mask"]).tolist()
    [[True, True, False, False, False, False]]
    """

    backbone_cls = PerformerBackbone

    def __init__(
        self,
        tokenizer,
        sequence_length=512,
        start_token_id=None,
        end_token_id=None,
        pad_token_id=None,
        **kwargs,
    ):
        check_positive_int("sequence_length", sequence_length)
        super().__init__(
            tokenizer=tokenizer, sequence_length=sequence_length, **kwargs
        )
        self._set_special_tokens(start_token_id, end_token_id, pad_token_id)

    def build(self, input_shape):
        self.packer = keras_hub.layers.StartEndPacker(
            start_value=self.start_token_id,
            end_value=self.end_token_id,
            pad_value=self.pad_token_id,
            sequence_length=self.sequence_length,
            return_padding_mask=True,
        )
        self.built = True

    def call(self, x, y=None, sample_weight=None):
        if isinstance(x, tuple):
            if len(x) != 1:
                raise ValueError(
                    "PerformerTextClassifierPreprocessor takes one text per "
                    f"example. Received: a tuple of {len(x)} segments"
                )
            (x,) = x
        return super().call(x, y=y, sample_weight=sample_weight)

    def _call_python(self, x, y=None, sample_weight=None):
        token_ids, padding_mask = self.packer(self.tokenizer(x))
        x = {"token_ids": token_ids, "padding_mask": padding_mask}
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    @preprocessing_function
    def _call_tf(self, x, y=None, sample_weight=None):
        return self._call_python(x, y=y, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("truncate")  # One text per example: nothing to share.
        config.update(self._special_token_config())
        return config


fill_docstring(
    PerformerTextClassifierPreprocessor,
    "special_tokens",
    special_tokens.DOCS,
)
