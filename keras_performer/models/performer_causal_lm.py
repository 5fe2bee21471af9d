"""PerformerCausalLM: a decoder-only language model with FAVOR+ attention."""

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_performer.layers import performer_options as options_lib
from keras_performer.layers.performer_block import SEEDS_PER_BLOCK
from keras_performer.layers.performer_decoder import PerformerDecoder
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.checks import check_same_batch
from keras_performer.ops.checks import host_value
from keras_performer.ops.masks import check_sequence_mask

SAMPLERS = ("greedy", "random", "top_k")


@options_lib.document
@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerCausalLM(keras.Model):
    """A decoder-only language model of `PerformerDecoder` blocks.

    Token and learned position embeddings
    (`keras_hub.layers.TokenAndPositionEmbedding`), `num_layers` pre-LN
    `PerformerDecoder` blocks, a final layer norm, and a vocabulary head
    tied to the token embedding, as in GPT-2. Called on token ids it returns
    next-token logits at every position, so `fit` trains it on
    `(ids[:, :-1], ids[:, 1:])` with a sparse cross-entropy from logits.

    Decoding keeps the causal FAVOR+ state of each block: a cache whose size
    does not depend on the position, so each generated token costs the same
    at position 16,000 as at position 10.

    Args:
        vocabulary_size: int. Number of token ids.
        num_layers: int. Number of decoder blocks.
        num_heads: int. Attention heads per block.
        hidden_dim: int. Size of the embeddings and the blocks' outputs; a
            multiple of `num_heads`.
        intermediate_dim: int. Hidden size of each feedforward network.
        max_sequence_length: int. Longest sequence (learned positions).
        dropout: float. Dropout rate in the blocks. Defaults to `0.0`.
        activation: str. Feedforward activation. Defaults to `"gelu"`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        {performer_options}
        **kwargs: base model arguments, such as `name` and `dtype`.

    Call arguments:
        token_ids: int tensor `(batch, length)`.
        padding_mask: boolean `(batch, length)`, `False` at padding.
            Defaults to `None`.
        training: bool. Whether dropout is active.

    Returns:
        Logits `(batch, length, vocabulary_size)`.

    Example:

    >>> lm = keras_performer.PerformerCausalLM(
    ...     vocabulary_size=16, num_layers=2, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=64, seed=0,
    ... )
    >>> lm.generate(np.ones((2, 3), "int32"), max_length=10).shape
    (2, 10)

    References:
        - [Radford et al., 2019](https://openai.com/research/better-language-models)
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        for name, value in (
            ("vocabulary_size", vocabulary_size),
            ("num_layers", num_layers),
            ("hidden_dim", hidden_dim),
            ("max_sequence_length", max_sequence_length),
        ):
            check_positive_int(name, value)
        check_positive_int("num_heads", num_heads)
        if hidden_dim % num_heads:
            raise ValueError(
                "`hidden_dim` must be a multiple of `num_heads`. Received: "
                f"hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        options = options_lib.pop_performer_options(kwargs)
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        options_lib.set_performer_options(self, options)
        seed = self.seed
        self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size,
            max_sequence_length,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=0.02, seed=seed
            ),
            dtype=self.dtype_policy,
            name="embedding",
        )
        self.blocks = [
            PerformerDecoder(
                intermediate_dim=intermediate_dim,
                num_heads=num_heads,
                dropout=dropout,
                activation=activation,
                layer_norm_epsilon=layer_norm_epsilon,
                normalize_first=True,
                **{**options, "seed": seed + SEEDS_PER_BLOCK * i},
                dtype=self.dtype_policy,
                name=f"decoder_block_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        # Compiled generation loops, by sampler. Kept out of Keras's and
        # TensorFlow's attribute tracking: they are no state of the model,
        # and a SavedModel cannot hold their samplers and functions.
        object.__setattr__(self, "_generate_functions", {})

    def build(self, token_ids_shape):
        if len(token_ids_shape) != 2:
            raise ValueError(
                "`token_ids` must have shape (batch, length). Received: "
                f"token_ids_shape={tuple(token_ids_shape)}"
            )
        hidden_shape = tuple(token_ids_shape) + (self.hidden_dim,)
        self.embedding.build(token_ids_shape)
        for block in self.blocks:
            block.build(hidden_shape)
        self.final_layer_norm.build(hidden_shape)

    def call(self, token_ids, padding_mask=None, training=None):
        self._check_token_ids(token_ids, padding_mask)
        x = self.embedding(token_ids)
        for block in self.blocks:
            x = block(x, decoder_padding_mask=padding_mask, training=training)
        return self._logits(self.final_layer_norm(x))

    def _check_token_ids(self, token_ids, padding_mask, start=0):
        """Raises `ValueError` unless `token_ids` have the shape `(batch,
        length)` at positions below `max_sequence_length` and, where they
        are in host memory, are integers in the vocabulary. (Inside a
        compiled function they are not read: out-of-range ids are the
        backend's to handle; Keras traces a model for export with float
        inputs, which the embedding casts.)"""
        shape = tuple(token_ids.shape)
        if len(shape) != 2:
            raise ValueError(
                "`token_ids` must have shape (batch, length). Received: "
                f"token_ids.shape={shape}"
            )
        if isinstance(start, int) and isinstance(shape[1], int):
            if start + shape[1] > self.max_sequence_length:
                raise ValueError(
                    "Token positions must be below max_sequence_length="
                    f"{self.max_sequence_length} (learned positions). "
                    f"Received: token_ids.shape={shape} at position {start}"
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

    def _logits(self, hidden_states):
        return self.embedding.token_embedding(hidden_states, reverse=True)

    def get_initial_cache(self, batch_size):
        """Returns the decoding cache before any token: the blocks' states
        stacked, `(batch_size, num_layers, num_heads, num_features,
        head_dim + 3)`, constant size."""
        if not self.built:
            self.build((None, None))
        return ops.stack(
            [block.get_initial_cache(batch_size) for block in self.blocks],
            axis=1,
        )

    def call_with_cache(
        self, token_ids, cache, cache_update_index, padding_mask=None
    ):
        """Runs tokens at positions `cache_update_index` onwards through
        the cache, as keras-hub's `CausalLM.call_with_cache`.

        Args:
            token_ids: int tensor `(batch, length)`.
            cache: from `get_initial_cache()` or an earlier call.
            cache_update_index: int or int tensor, the position of the
                first token. A token at a position the cache already holds
                is not absorbed again.
            padding_mask: boolean `(batch, length)`; padded tokens are not
                absorbed. Defaults to `None`.

        Returns:
            `(logits, hidden_states, cache)`: logits `(batch, length,
            vocabulary_size)`, the final hidden states `(batch, length,
            hidden_dim)` and the new cache.
        """
        if not self.built:
            self.build((None, None))
        # One state per block here; each block's attention checks the
        # shape of its own.
        if len(cache.shape) != 5 or cache.shape[1] != self.num_layers:
            raise ValueError(
                "`cache` must come from this model's `get_initial_cache()` "
                "or `call_with_cache()`: shape (batch, num_layers="
                f"{self.num_layers}, num_heads, num_features, head_dim + 3). "
                f"Received: cache.shape={tuple(cache.shape)}"
            )
        check_same_batch("cache", cache, "token_ids", token_ids)
        self._check_token_ids(token_ids, padding_mask, cache_update_index)
        x = self.embedding(token_ids, start_index=cache_update_index)
        states = []
        for i, block in enumerate(self.blocks):
            x, state = block(
                x,
                decoder_padding_mask=padding_mask,
                self_attention_cache=cache[:, i],
                self_attention_cache_update_index=cache_update_index,
            )
            states.append(state)
        hidden_states = self.final_layer_norm(x)
        return self._logits(hidden_states), hidden_states, ops.stack(states, 1)

    def generate(
        self,
        prompt_ids,
        max_length,
        sampler="greedy",
        temperature=1.0,
        top_k=None,
        seed=None,
    ):
        """Continues prompts token by token through the cache.

        The loop is compiled (an XLA-compiled `tf.function` on TensorFlow,
        `jax.jit` on JAX; PyTorch runs it eagerly, without autograd) and
        reuses `keras_hub.samplers`;
        each new token costs the same whatever its position. The same
        `seed` gives the same tokens.

        Args:
            prompt_ids: int array `(batch, prompt_length)`, at least one
                token per row, all rows of the same length.
            max_length: int. Length of the returned sequences, prompt
                included; at most `max_sequence_length`.
            sampler: str. `"greedy"` (most likely token), `"random"`
                (sample from the softmax) or `"top_k"` (sample among the
                `top_k` most likely). Defaults to `"greedy"`.
            temperature: float. Logits are divided by it before sampling.
                Defaults to `1.0`.
            top_k: int. Candidates of the `"top_k"` sampler. Defaults to
                `None`.
            seed: int. Seed of the random samplers. Defaults to `None`.

        Returns:
            Int32 NumPy array `(batch, max_length)`: the prompts and their
            continuations.
        """
        prompt_ids = ops.convert_to_tensor(prompt_ids)
        if len(prompt_ids.shape) != 2 or "int" not in str(prompt_ids.dtype):
            raise ValueError(
                "`prompt_ids` must be integer token ids of shape (batch, "
                f"prompt_length). Received: prompt_ids.shape="
                f"{tuple(prompt_ids.shape)}, dtype={prompt_ids.dtype}"
            )
        prompt_length = prompt_ids.shape[1]
        if prompt_length < 1:
            raise ValueError(
                "`prompt_ids` must hold at least one token (e.g. a start "
                "token). Received: prompt_ids.shape="
                f"{tuple(prompt_ids.shape)}"
            )
        if (
            not isinstance(max_length, int)
            or not prompt_length <= max_length <= self.max_sequence_length
        ):
            raise ValueError(
                "`max_length` must be an int from the prompt length "
                f"({prompt_length}) to max_sequence_length "
                f"({self.max_sequence_length}). Received: "
                f"max_length={max_length}"
            )
        if not self.built:  # Variables made outside the compiled loop.
            self.build((None, None))
        key = (sampler, temperature, top_k, seed)
        if key not in self._generate_functions:
            sampler = _make_sampler(sampler, temperature, top_k, seed)
            self._generate_functions[key] = (
                sampler,
                [ops.convert_to_numpy(v) for v in sampler.variables],
                self._make_generate_function(sampler),
            )
        sampler, states, generate_function = self._generate_functions[key]
        if seed is not None:  # Same seed, same tokens, call after call.
            for variable, state in zip(sampler.variables, states, strict=True):
                variable.assign(state)
        tokens = generate_function(ops.cast(prompt_ids, "int32"), max_length)
        return ops.convert_to_numpy(tokens)

    def _make_generate_function(self, sampler):
        def generate(prompt_ids, max_length):
            batch_size = ops.shape(prompt_ids)[0]
            prompt_length = ops.shape(prompt_ids)[1]
            cache = self.get_initial_cache(batch_size)
            _, _, cache = self.call_with_cache(prompt_ids, cache, 0)
            tokens = ops.pad(
                prompt_ids, [(0, 0), (0, max_length - prompt_length)]
            )
            is_prompt = ops.arange(max_length)[None, :] < prompt_length

            def next_logits(tokens, cache, index):
                # keras-hub's loop feeds the token before `index` again: the
                # cache knows it holds it and does not absorb it twice.
                token = ops.slice(tokens, [0, index - 1], [batch_size, 1])
                logits, hidden_states, cache = self.call_with_cache(
                    token, cache, index - 1
                )
                return logits[:, 0], hidden_states[:, 0], cache

            return sampler(
                next_logits,
                tokens,
                cache=cache,
                index=prompt_length,
                mask=ops.tile(is_prompt, (batch_size, 1)),
                model=self,
            )

        backend = keras.config.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            # XLA fuses the many small ops of a one-token step: 4x faster
            # per token than graph mode on a CPU (tools/benchmark.py).
            return tf.function(generate, jit_compile=True)
        if backend == "jax":
            return self._jax_generate_function(generate, sampler)
        if backend == "torch":
            import torch

            return torch.no_grad()(generate)
        return generate

    def _jax_generate_function(self, generate, sampler):
        """`generate` under `jax.jit`: the model's and the sampler's
        variables go in as arguments, the sampler's new seed state comes
        out and is assigned."""
        import jax

        variables = self.variables + sampler.variables

        def stateless_generate(values, prompt_ids, max_length):
            mapping = list(zip(variables, values, strict=True))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                tokens = generate(prompt_ids, max_length)
                seeds = [scope.get_current_value(v) for v in sampler.variables]
            return tokens, seeds

        compiled = jax.jit(stateless_generate, static_argnums=2)

        def run(prompt_ids, max_length):
            values = [v.value for v in variables]
            tokens, seeds = compiled(values, prompt_ids, max_length)
            for variable, seed in zip(sampler.variables, seeds, strict=True):
                variable.assign(seed)
            return tokens

        return run

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
                "dropout": self.dropout,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                **options_lib.performer_options(self),
            }
        )
        return config


def _make_sampler(name, temperature, top_k, seed):
    if name not in SAMPLERS:
        raise ValueError(
            f"`sampler` must be one of {SAMPLERS}. Received: sampler={name}"
        )
    if (name == "top_k") != (top_k is not None):
        raise ValueError(
            "`top_k` is the number of candidates of the 'top_k' sampler and "
            f"only of it. Received: sampler={name}, top_k={top_k}"
        )
    if not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(
            "`temperature` must be a positive number. Received: "
            f"temperature={temperature}"
        )
    if name == "greedy":
        return keras_hub.samplers.GreedySampler(temperature=temperature)
    if name == "random":
        return keras_hub.samplers.RandomSampler(
            seed=seed, temperature=temperature
        )
    check_positive_int("top_k", top_k)
    return keras_hub.samplers.TopKSampler(
        k=top_k, seed=seed, temperature=temperature
    )
