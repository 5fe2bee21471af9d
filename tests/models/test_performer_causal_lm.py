import os

import keras
import numpy as np
import pytest

from keras_performer import PerformerCausalLM
from tests.helpers import jit_compile


def language_model(**kwargs):
    arguments = dict(
        vocabulary_size=16,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=64,
        seed=0,
    )
    return PerformerCausalLM(**{**arguments, **kwargs})


def token_ids(seed=0, batch=2, length=20, vocabulary=16):
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocabulary, size=(batch, length)).astype("int32")


@pytest.mark.parametrize("rotary_max_wavelength", [None, 10000])
def test_logits_and_cached_calls_equal_the_full_pass(rotary_max_wavelength):
    lm = language_model(rotary_max_wavelength=rotary_max_wavelength)
    ids = token_ids()
    full = np.asarray(lm(ids))
    assert full.shape == (2, 20, 16)
    cache = lm.get_initial_cache(2)
    assert tuple(cache.shape) == (2, 2, 2, 256, 8 + 3)
    logits, hidden, cache = lm.call_with_cache(ids[:, :5], cache, 0)
    pieces = [np.asarray(logits)]
    assert hidden.shape == (2, 5, 16)
    for i in range(5, 20):
        logits, _, new_cache = lm.call_with_cache(ids[:, i : i + 1], cache, i)
        assert new_cache.shape == cache.shape  # constant size
        cache = new_cache
        pieces.append(np.asarray(logits))
    np.testing.assert_allclose(
        np.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5
    )


def test_greedy_generation_follows_the_full_pass():
    lm = language_model()
    ids = token_ids(length=3)
    tokens = lm.generate(ids, max_length=24)
    assert tokens.shape == (2, 24) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens[:, :3], ids)
    # Each generated token is the argmax of the full pass over what
    # precedes it.
    predicted = np.argmax(np.asarray(lm(tokens[:, :-1])), axis=-1)
    np.testing.assert_array_equal(tokens[:, 3:], predicted[:, 2:])


def test_generation_is_compiled_once_and_seeded(monkeypatch):
    lm = language_model()
    calls = []
    call_with_cache = lm.call_with_cache
    monkeypatch.setattr(
        lm, "call_with_cache", lambda *a: calls.append(1) or call_with_cache(*a)
    )
    ids = token_ids(length=4)
    first = lm.generate(ids, 30, sampler="top_k", top_k=4, seed=7)
    traced = len(calls)
    lm.generate(token_ids(1, length=4), 30, "top_k", top_k=4, seed=7)
    if keras.backend.backend() != "torch":  # PyTorch runs it eagerly.
        # One compiled loop per sampler, reused across calls and prompts.
        assert len(calls) == traced
    again = lm.generate(ids, 30, sampler="top_k", top_k=4, seed=7)
    np.testing.assert_array_equal(first, again)
    other = lm.generate(ids, 30, sampler="top_k", top_k=4, seed=8)
    assert not np.array_equal(first, other)
    randomly = lm.generate(ids, 30, sampler="random", seed=7)
    assert not np.array_equal(first, randomly)


def test_generation_with_the_cache_as_keras_hub_feeds_it():
    # A prompt absorbed, then its last token fed again at its index: the
    # logits equal those of the full pass.
    lm = language_model()
    ids = token_ids(length=8)
    full = np.asarray(lm(ids))
    _, _, cache = lm.call_with_cache(ids, lm.get_initial_cache(2), 0)
    logits, _, same = lm.call_with_cache(ids[:, -1:], cache, 7)
    np.testing.assert_allclose(logits[:, 0], full[:, -1], atol=1e-5)
    np.testing.assert_allclose(same, cache, atol=1e-6)


def test_keras_round_trip(tmp_path):
    lm = language_model(feature_map="hyperbolic", num_random_features=32)
    ids = token_ids()
    lm(ids)
    config = lm.get_config()
    assert PerformerCausalLM.from_config(config).get_config() == config
    path = os.path.join(tmp_path, "lm.keras")
    lm.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(ids), lm(ids), atol=1e-6)
    np.testing.assert_array_equal(
        loaded.generate(ids[:, :2], 12), lm.generate(ids[:, :2], 12)
    )


def test_summary_lists_the_blocks(capsys):
    lm = language_model()
    lm.build((None, 64))
    lm.summary()
    summary = capsys.readouterr().out
    assert "decoder_block_1" in summary and "(None, 64, 16)" in summary


def recall_task(size, rng, length=8, vocabulary=8):
    """Random tokens, then a query token (`vocabulary`): the answer is the
    first token, which only attention can bring to the last position."""
    ids = rng.integers(0, vocabulary, size=(size, length + 1)).astype("int32")
    ids[:, -1] = vocabulary
    return ids, ids[:, 0]


def test_learns_a_task_that_needs_attention():
    rng = np.random.default_rng(0)
    lm = language_model(
        vocabulary_size=9, hidden_dim=32, num_heads=2, num_random_features=64
    )
    ids, answers = recall_task(2048, rng)
    targets = np.zeros_like(ids)
    targets[:, -1] = answers
    weights = np.zeros(ids.shape, "float32")
    weights[:, -1] = 1.0  # only the answer counts
    lm.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile(),
    )
    lm.fit(
        ids, targets, sample_weight=weights, epochs=8, batch_size=64, verbose=0
    )
    test_ids, test_answers = recall_task(512, rng)
    predicted = np.argmax(np.asarray(lm(test_ids))[:, -1], axis=-1)
    # Chance is 1/8.
    assert np.mean(predicted == test_answers) > 0.9


@pytest.mark.parametrize(
    "mixed_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True
)
def test_mixed_precision_generation(mixed_policy):
    lm = language_model()
    tokens = lm.generate(token_ids(length=3), max_length=16)
    assert tokens.shape == (2, 16)
    assert np.all((0 <= tokens) & (tokens < 16))


def test_bad_arguments():
    with pytest.raises(ValueError, match="hidden_dim"):
        language_model(hidden_dim=15)
    with pytest.raises(ValueError, match="num_layers"):
        language_model(num_layers=0)
    lm = language_model()
    ids = token_ids(length=10)
    with pytest.raises(ValueError, match="max_length"):
        lm.generate(ids, max_length=8)  # prompt longer than max_length
    with pytest.raises(ValueError, match="max_length"):
        lm.generate(ids, max_length=65)
    with pytest.raises(ValueError, match="prompt_ids"):
        lm.generate(ids[:, :0], max_length=8)
    with pytest.raises(ValueError, match="prompt_ids"):
        lm.generate(ids[0], max_length=12)
    with pytest.raises(ValueError, match="sampler"):
        lm.generate(ids, max_length=12, sampler="beam")
    with pytest.raises(ValueError, match="top_k"):
        lm.generate(ids, max_length=12, sampler="top_k")
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(ids, max_length=12, temperature=0)
    other = language_model(num_layers=3)
    with pytest.raises(ValueError, match="cache"):
        lm.call_with_cache(ids, other.get_initial_cache(2), 0)
    other = language_model(num_random_features=32)
    with pytest.raises(ValueError, match="cache"):
        lm.call_with_cache(ids, other.get_initial_cache(2), 0)


BAD_INPUTS = {
    "rank": (lambda lm: lm(np.ones((2, 4, 1), "int32")), "token_ids.shape"),
    "dtype": (lambda lm: lm(np.ones((2, 4), "float32")), "dtype=float32"),
    "out_of_vocabulary": (
        lambda lm: lm(np.full((2, 4), 16, "int32")),
        "from 16 to 16",
    ),
    "negative": (lambda lm: lm(np.full((2, 4), -1, "int32")), "from -1"),
    "too_long": (
        lambda lm: lm(np.ones((2, 65), "int32")),
        "max_sequence_length=64",
    ),
    "padding_mask": (
        lambda lm: lm(np.ones((2, 4), "int32"), np.ones((2, 3), bool)),
        r"padding_mask.shape=\(2, 3\)",
    ),
    "cache_batch": (
        lambda lm: lm.call_with_cache(
            np.ones((2, 1), "int32"), lm.get_initial_cache(3), 0
        ),
        r"cache.shape=\(3,",
    ),
    "cache_layers": (
        lambda lm: lm.call_with_cache(
            np.ones((2, 1), "int32"), lm.get_initial_cache(2)[:, :1], 0
        ),
        "num_layers=2",
    ),
    "cached_position": (
        lambda lm: lm.call_with_cache(
            np.ones((2, 2), "int32"), lm.get_initial_cache(2), 63
        ),
        "at position 63",
    ),
    "prompt_too_long": (
        lambda lm: lm.generate(np.ones((2, 12), "int32"), max_length=10),
        "max_length=10",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_are_named(case):
    call, match = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=match):
        call(language_model())
