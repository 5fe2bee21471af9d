"""PerformerBackbone: a keras-hub backbone of Performer blocks."""

import keras
import keras_hub
import numpy as np

from keras_performer.layers import performer_options as options_lib
from keras_performer.layers.performer_block import SEEDS_PER_BLOCK
from keras_performer.layers.performer_decoder import PerformerDecoder
from keras_performer.layers.performer_encoder import PerformerEncoder
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.checks import host_value
from keras_performer.ops.masks import check_sequence_mask
from keras_performer.ops.projection import concrete_seed


@options_lib.document
@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerBackbone(keras_hub.models.Backbone):
    """A stack of Performer blocks, as a `keras_hub.models.Backbone`.

    Token embedding, position information (learned position embeddings as
    in GPT-2, or rotary ones inside the attention when
    `rotary_max_wavelength` is set), `num_layers` pre-LN Performer blocks
    and a final layer norm. With `causal=True` the blocks are
    `PerformerDecoder`s (a decoder-only language model, for
    `PerformerCausalLM`); with `causal=False` they are `PerformerEncoder`s
    (bidirectional, for `PerformerTextClassifier`).

    Its inputs are those of keras-hub's backbones, a dict of `"token_ids"`
    and `"padding_mask"` (both `(batch, length)`, the mask `0`/`False` at
    padding); its output the final hidden states `(batch, length,
    hidden_dim)`.

    Args:
        vocabulary_size: int. Number of token ids.
        num_layers: int. Number of Performer blocks.
        num_heads: int. Attention heads per block.
        hidden_dim: int. Size of the embeddings and the blocks' outputs; a
            multiple of `num_heads`.
        intermediate_dim: int. Hidden size of each feedforward network.
        max_sequence_length: int. Longest sequence of the learned position
            embedding; with rotary positions (`rotary_max_wavelength`) there
            is no position embedding and no limit. Defaults to `1024`.
        causal: bool. Whether each token attends only to those before it.
            Defaults to `True`.
        dropout: float. Dropout rate of the embeddings and the blocks.
            Defaults to `0.0`.
        activation: str. Feedforward activation. Defaults to `"gelu"`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        {performer_options}
        dtype: the dtype policy of the layers. Defaults to `None` (Keras's
            global policy).
        **kwargs: base model arguments, such as `name`.

    Example:

    >>> backbone = keras_performer.models.PerformerBackbone(
    ...     vocabulary_size=16, num_layers=2, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=64, seed=0,
    ... )
    >>> inputs = {
    ...     "token_ids": np.ones((2, 8), "int32"),
    ...     "padding_mask": np.ones((2, 8), "int32"),
    ... }
    >>> tuple(backbone(inputs).shape)
    (2, 8, 16)

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
        - [Radford et al., 2019](https://openai.com/research/better-language-models)
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=1024,
        causal=True,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        dtype=None,
        **kwargs,
    ):
        for name, value in (
            ("vocabulary_size", vocabulary_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("hidden_dim", hidden_dim),
            ("intermediate_dim", intermediate_dim),
            ("max_sequence_length", max_sequence_length),
        ):
            check_positive_int(name, value)
        if hidden_dim % num_heads:
            raise ValueError(
                "`hidden_dim` must be a multiple of `num_heads`. Received: "
                f"hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        if not isinstance(causal, bool):
            raise ValueError(f"`causal` must be a bool. Received: {causal=}")
        options = options_lib.pop_performer_options(kwargs)
        unknown = sorted(set(kwargs) - {"name", "trainable"})
        if unknown:
            raise ValueError(
                "Unrecognized arguments (neither the backbone's, the "
                f"Performer options nor a model's): {unknown}. Received: "
                + ", ".join(f"{key}={kwargs[key]!r}" for key in unknown)
            )
        seed = concrete_seed(options["seed"])
        options["seed"] = seed
        initializer = keras.initializers.RandomNormal(stddev=0.02, seed=seed)

        # === Layers ===
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            embeddings_initializer=initializer,
            dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = None
        if options["rotary_max_wavelength"] is None:
            self.position_embedding = keras_hub.layers.PositionEmbedding(
                sequence_length=max_sequence_length,
                initializer=keras.initializers.RandomNormal(
                    stddev=0.02, seed=seed + 1
                ),
                dtype=dtype,
                name="position_embedding",
            )
        self.embeddings_dropout = keras.layers.Dropout(
            dropout, seed=seed, dtype=dtype, name="embeddings_dropout"
        )
        block = PerformerDecoder if causal else PerformerEncoder
        self.transformer_layers = [
            block(
                intermediate_dim=intermediate_dim,
                num_heads=num_heads,
                dropout=dropout,
                activation=activation,
                layer_norm_epsilon=layer_norm_epsilon,
                normalize_first=True,
                **{**options, "seed": seed + SEEDS_PER_BLOCK * i},
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="layer_norm"
        )

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(
            shape=(None,), dtype="int32", name="padding_mask"
        )
        x = self.embed(token_ids)
        for layer in self.transformer_layers:
            x = self.run_block(layer, x, padding_mask)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=self.layer_norm(x),
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.causal = causal
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        options_lib.set_performer_options(self, options)

    def call(self, inputs, training=None, mask=None):
        if not isinstance(inputs, dict) or set(inputs) != {
            "token_ids",
            "padding_mask",
        }:
            raise ValueError(
                'The backbone takes a dict of "token_ids" and "padding_mask". '
                "Received: "
                + (
                    f"keys {sorted(inputs)}"
                    if isinstance(inputs, dict)
                    else f"inputs of type {type(inputs).__name__}"
                )
            )
        self.check_token_ids(inputs["token_ids"], inputs["padding_mask"])
        return super().call(inputs, training=training, mask=mask)

    def check_token_ids(self, token_ids, padding_mask=None, start=0):
        """Raises `ValueError` unless `token_ids` have the shape `(batch,
        length)` (with learned positions, at positions below
        `max_sequence_length` from `start`) and, where they are in host
        memory, are integers in the vocabulary. (Inside a compiled function
        they are not read: out-of-range ids are the backend's to handle.)"""
        shape = tuple(token_ids.shape)
        if len(shape) != 2:
            raise ValueError(
                "`token_ids` must have shape (batch, length). Received: "
                f"token_ids.shape={shape}"
            )
        if (
            self.learned_positions
            and isinstance(start, int)
            and isinstance(shape[1], int)
            and start + shape[1] > self.max_sequence_length
        ):
            raise ValueError(
                "Token positions must be below max_sequence_length="
                f"{self.max_sequence_length} (learned positions). Received: "
                f"token_ids.shape={shape} at position {start}"
            )
        check_sequence_mask("padding_mask", padding_mask, token_ids)
        ids = host_value(token_ids)
        if ids is None:
            return
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                "`token_ids` must be integers. Received: token_ids.dtype="
                f"{keras.backend.standardize_dtype(token_ids.dtype)}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocabulary_size):
            raise ValueError(
                "`token_ids` must be in [0, vocabulary_size="
                f"{self.vocabulary_size}). Received: token ids from "
                f"{ids.min()} to {ids.max()}"
            )

    @property
    def learned_positions(self):
        """Whether positions come from a learned embedding, which limits
        sequences to `max_sequence_length` tokens."""
        return self.position_embedding is not None

    def embed(self, token_ids, start_index=0, training=None):
        """Token embeddings plus, with learned positions, the embeddings of
        positions `start_index` onwards, after dropout."""
        x = self.token_embedding(token_ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(x, start_index=start_index)
        return self.embeddings_dropout(x, training=training)

    def run_block(self, layer, x, padding_mask, training=None, **cache):
        """One block on hidden states `x`, its padding mask passed under the
        block's own argument name; `cache` holds the decoder's cache
        arguments."""
        if isinstance(layer, PerformerDecoder):
            return layer(
                x, decoder_padding_mask=padding_mask, training=training, **cache
            )
        return layer(x, padding_mask=padding_mask, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "max_sequence_length": self.max_sequence_length,
                "causal": self.causal,
                "dropout": self.dropout,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                **options_lib.performer_options(self),
            }
        )
        return config
