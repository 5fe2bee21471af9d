"""PerformerCausalLM: a keras-hub causal language model with FAVOR+."""

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_performer.models import special_tokens
from keras_performer.models.performer_backbone import PerformerBackbone
from keras_performer.models.performer_causal_lm_preprocessor import (
    PerformerCausalLMPreprocessor,
)
from keras_performer.ops.checks import check_same_batch
from keras_performer.ops.checks import host_value


@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerCausalLM(keras_hub.models.CausalLM):
    """A causal language model on a `PerformerBackbone`.

    A `keras_hub.models.CausalLM`: called on `{"token_ids",
    "padding_mask"}` it returns next-token logits at every position
    (vocabulary head tied to the token embedding, as in GPT-2); `fit`,
    `generate` (strings in and out with a preprocessor, token-id dicts
    without), `compile(sampler=...)` with any `keras_hub.samplers` sampler,
    `stop_token_ids`, `strip_prompt`, `save_to_preset` and `from_preset`
    work as for keras-hub's own models.

    Generation keeps, per block, the causal FAVOR+ state (prefix sums of
    the key features times the values): a cache whose size depends neither
    on the position nor on `max_length`, so each generated token costs the
    same at position 16,000 as at position 10.

    Args:
        backbone: a `PerformerBackbone` with `causal=True`.
        preprocessor: a `PerformerCausalLMPreprocessor` or `None` (inputs
            then come tokenized). Defaults to `None`.
        **kwargs: base model arguments, such as `name`.

    Example:

    >>> backbone = keras_performer.models.PerformerBackbone(
    ...     vocabulary_size=258, num_layers=1, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=64, seed=0,
    ... )
    >>> preprocessor = keras_performer.models.PerformerCausalLMPreprocessor(
    ...     keras_hub.tokenizers.ByteTokenizer(), sequence_length=16,
    ...     start_token_id=256, end_token_id=257,
    ... )
    >>> lm = keras_performer.models.PerformerCausalLM(backbone, preprocessor)
    >>> lm.compile(sampler="greedy")
    >>> isinstance(lm.generate("hello", max_length=12), str)
    True

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """

    backbone_cls = PerformerBackbone
    preprocessor_cls = PerformerCausalLMPreprocessor

    def __init__(self, backbone=None, preprocessor=None, **kwargs):
        if not isinstance(backbone, PerformerBackbone) or not backbone.causal:
            raise ValueError(
                "PerformerCausalLM takes a PerformerBackbone with causal=True "
                "(since version 0.2.0): PerformerCausalLM(PerformerBackbone("
                "vocabulary_size=..., num_layers=..., num_heads=..., "
                "hidden_dim=..., intermediate_dim=...), preprocessor=None). "
                f"Received: backbone={backbone!r}"
                + (f", {sorted(kwargs)}" if kwargs else "")
            )
        special_tokens.check_vocabulary(backbone, preprocessor)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        # === Functional model ===
        inputs = backbone.input
        hidden_states = backbone(inputs)
        logits = backbone.token_embedding(hidden_states, reverse=True)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

    def get_initial_cache(self, batch_size):
        """The decoding cache before any token: the blocks' states stacked,
        `(batch_size, num_layers, num_heads, num_features, head_dim + 3)`,
        whatever the length to generate."""
        return ops.stack(
            [
                layer.get_initial_cache(batch_size)
                for layer in self.backbone.transformer_layers
            ],
            axis=1,
        )

    def call_with_cache(
        self, token_ids, cache, cache_update_index, padding_mask=None
    ):
        """Runs tokens at positions `cache_update_index` onwards through
        the cache (keras-hub's `CausalLM` protocol).

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
            hidden_dim)` and the new cache, of the same shape.
        """
        backbone = self.backbone
        if len(cache.shape) != 5 or cache.shape[1] != backbone.num_layers:
            raise ValueError(
                "`cache` must come from this model's `get_initial_cache()` "
                "or `call_with_cache()`: shape (batch, num_layers="
                f"{backbone.num_layers}, num_heads, num_features, head_dim "
                f"+ 3). Received: cache.shape={tuple(cache.shape)}"
            )
        check_same_batch("cache", cache, "token_ids", token_ids)
        backbone.check_token_ids(token_ids, padding_mask, cache_update_index)
        x = backbone.embed(token_ids, start_index=cache_update_index)
        states = []
        for i, layer in enumerate(backbone.transformer_layers):
            x, state = backbone.run_block(
                layer,
                x,
                padding_mask,
                self_attention_cache=cache[:, i],
                self_attention_cache_update_index=cache_update_index,
            )
            states.append(state)
        hidden_states = backbone.layer_norm(x)
        logits = backbone.token_embedding(hidden_states, reverse=True)
        return logits, hidden_states, ops.stack(states, axis=1)

    def _build_cache(self, token_ids, padding_mask):
        """The cache seeded with the tokens before the shortest prompt's
        end (the generation loop feeds the rest one by one), and the hidden
        states of `token_ids`."""
        batch_size, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        seen = ops.arange(length)[None, :] < first_generated(padding_mask)
        seen = ops.broadcast_to(seen, (batch_size, length))
        cache = self.get_initial_cache(batch_size)
        _, hidden_states, cache = self.call_with_cache(
            token_ids, cache, 0, padding_mask=seen
        )
        return hidden_states, cache

    def generate_step(self, inputs, stop_token_ids=None):
        """Generates one batch: `inputs` `{"token_ids", "padding_mask"}`,
        the prompts right-padded to the length to generate; returns the
        same dict, the mask `True` up to each row's first stop token."""
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        padding_mask = ops.cast(padding_mask, "bool")
        hidden_states, cache = self._build_cache(token_ids, padding_mask)
        index = first_generated(padding_mask)

        def next_token_logits(prompt, cache, index):
            # Feeds the token before `index`; the cache does not absorb a
            # token it already holds.
            batch_size = ops.shape(prompt)[0]
            token = ops.slice(prompt, [0, index - 1], [batch_size, 1])
            logits, hidden_states, cache = self.call_with_cache(
                token, cache, index - 1
            )
            return logits[:, 0], hidden_states[:, 0], cache

        token_ids = self.sampler(
            next=next_token_logits,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )
        if stop_token_ids is None:
            return {
                "token_ids": token_ids,
                "padding_mask": ops.ones_like(token_ids, dtype="bool"),
            }
        # Kept: the prompt and the generated tokens up to the first stop
        # token, included.
        generated = ops.logical_not(padding_mask)
        stops = ops.zeros_like(generated)
        for stop in stop_token_ids:
            stops = ops.logical_or(stops, ops.equal(token_ids, stop))
        stops = ops.cast(ops.logical_and(stops, generated), "int32")
        before = ops.cumsum(stops, axis=-1) - stops
        return {
            "token_ids": token_ids,
            "padding_mask": ops.equal(before, 0),
        }

    def generate(
        self,
        inputs,
        max_length=None,
        stop_token_ids="auto",
        strip_prompt=False,
    ):
        """Generates text (or token ids) from prompts, as
        `keras_hub.models.CausalLM.generate`, with the sampler of
        `compile()`.

        Args:
            inputs: a string or a list of strings (with a preprocessor), a
                dict `{"token_ids", "padding_mask"}` (without one: prompts
                right-padded to the length to generate), or a
                `tf.data.Dataset` of either.
            max_length: int. Length of the sequences, prompt included.
                Defaults to the preprocessor's `sequence_length`; at most
                the backbone's `max_sequence_length` with learned positions.
            stop_token_ids: `"auto"` (the preprocessor's `end_token_id`,
                none for a preprocessor without one),
                `None` (generate to `max_length`) or a list of token ids.
                Defaults to `"auto"`.
            strip_prompt: bool. Whether to return only what follows the
                prompt. Defaults to `False`.

        Returns:
            Strings with a preprocessor (one for a string), else a dict of
            NumPy arrays `{"token_ids", "padding_mask"}`.
        """
        if stop_token_ids == "auto" and isinstance(
            self.preprocessor, special_tokens.SpecialTokens
        ):
            # Ours may have an end token its tokenizer lacks (keras-hub's
            # "auto" reads the tokenizer's).
            end = self.preprocessor.end_token_id
            stop_token_ids = None if end is None else [end]
        if self.preprocessor is not None:
            length = max_length or self.preprocessor.sequence_length
            self._check_length("max_length", length)
        elif isinstance(inputs, dict):
            self._check_token_inputs(inputs)
        return super().generate(
            inputs,
            max_length=max_length,
            stop_token_ids=stop_token_ids,
            strip_prompt=strip_prompt,
        )

    def _check_length(self, name, length):
        backbone = self.backbone
        if backbone.learned_positions and length > backbone.max_sequence_length:
            raise ValueError(
                f"`{name}` must be at most the backbone's max_sequence_length="
                f"{backbone.max_sequence_length} (learned positions). "
                f"Received: {name}={length}"
            )

    def _check_token_inputs(self, inputs):
        if set(inputs) != {"token_ids", "padding_mask"}:
            raise ValueError(
                "Without a preprocessor, `inputs` must be a dict of "
                '"token_ids" and "padding_mask". Received: keys '
                f"{sorted(inputs)}"
            )
        token_ids = inputs["token_ids"]
        self._check_length("the prompts' length", token_ids.shape[-1])
        mask = host_value(inputs["padding_mask"])
        if mask is not None and mask.size and not np.all(mask[..., 0]):
            raise ValueError(
                "Each prompt needs at least one token, at position 0 (prompts "
                "are right-padded). Received: padding_mask[..., 0]="
                f"{np.ravel(mask[..., 0]).tolist()}"
            )


def first_generated(padding_mask):
    """The position where generation starts: the end of the shortest of
    the right-padded prompts (the loop feeds the longer ones' rest)."""
    return ops.min(ops.sum(ops.cast(padding_mask, "int32"), axis=-1))
