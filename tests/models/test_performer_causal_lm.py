"""PerformerCausalLM as a keras-hub CausalLM: the full pass and the cache
agree, generation through keras-hub's loop (strings, token dicts,
samplers, stop tokens, prompts of different lengths), presets, bad input."""

import copy
import os

import keras
import keras_hub
import numpy as np
import pytest

from keras_performer.callbacks import redraw_features
from keras_performer.models import PerformerBackbone
from keras_performer.models import PerformerCausalLM
from keras_performer.models import PerformerCausalLMPreprocessor
from keras_performer.models import PerformerTokenizer
from tests.helpers import jit_compile

START, END = 256, 257  # The byte tokenizer's ids end at 255.


def backbone(**kwargs):
    arguments = dict(
        vocabulary_size=258,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=64,
        num_random_features=16,
        seed=0,
    )
    return PerformerBackbone(**{**arguments, **kwargs})


def preprocessor(sequence_length=24):
    return PerformerCausalLMPreprocessor(
        keras_hub.tokenizers.ByteTokenizer(),
        sequence_length=sequence_length,
        start_token_id=START,
        end_token_id=END,
    )


def language_model(with_preprocessor=True, **kwargs):
    lm = PerformerCausalLM(
        backbone(**kwargs), preprocessor() if with_preprocessor else None
    )
    lm.compile(sampler="greedy")
    return lm


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(0)
    return language_model()


def inputs(token_ids, padding_mask=None):
    if padding_mask is None:
        padding_mask = np.ones(token_ids.shape, bool)
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def token_ids(seed=0, batch=2, length=20, vocabulary=256):
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocabulary, size=(batch, length)).astype("int32")


def logits(lm, ids):
    return np.asarray(lm(inputs(ids)))


@pytest.mark.parametrize("rotary_max_wavelength", [None, 10000])
def test_cached_calls_equal_the_full_pass(rotary_max_wavelength):
    lm = language_model(rotary_max_wavelength=rotary_max_wavelength)
    assert lm.backbone.learned_positions == (rotary_max_wavelength is None)
    ids = token_ids()
    full = logits(lm, ids)
    assert full.shape == (2, 20, 258)
    cache = lm.get_initial_cache(2)
    assert tuple(cache.shape) == (2, 2, 2, 16, 8 + 3)
    out, hidden, cache = lm.call_with_cache(ids[:, :5], cache, 0)
    pieces = [np.asarray(out)]
    assert hidden.shape == (2, 5, 16)
    for i in range(5, 20):
        out, _, new_cache = lm.call_with_cache(ids[:, i : i + 1], cache, i)
        assert new_cache.shape == cache.shape  # constant size
        cache = new_cache
        pieces.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5
    )


def test_favor_sharp_decodes_and_generates_as_its_full_pass():
    lm = language_model(
        with_preprocessor=False, feature_map="dense_exponential"
    )
    ids = token_ids(1)
    lm.backbone(inputs(ids), training=True)  # Running moments, not zero.
    moments = [np.array(w) for w in lm.weights if w.name == "query_key_moments"]
    assert len(moments) == 2 and all(np.any(m != 0) for m in moments)
    full = logits(lm, ids)
    cache = lm.get_initial_cache(2)
    pieces = []
    for i in range(20):
        out, _, cache = lm.call_with_cache(ids[:, i : i + 1], cache, i)
        pieces.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5
    )
    prompt = np.pad(ids[:, :3], [(0, 0), (0, 9)])
    mask = np.repeat(np.arange(12)[None, :] < 3, 2, 0)
    tokens = lm.generate(inputs(prompt, mask), stop_token_ids=None)
    predicted = np.argmax(logits(lm, tokens["token_ids"][:, :-1]), axis=-1)
    np.testing.assert_array_equal(tokens["token_ids"][:, 3:], predicted[:, 2:])


def test_the_cache_does_not_depend_on_the_length_to_generate(lm):
    shapes = []
    for length in (8, 48):
        ids = token_ids(length=length)
        _, cache = lm._build_cache(ids, np.ones(ids.shape, bool))
        shapes.append(tuple(cache.shape))
    assert shapes[0] == shapes[1] == tuple(lm.get_initial_cache(2).shape)


def test_a_token_the_cache_holds_is_not_absorbed_again(lm):
    # keras-hub's loop feeds the token before its index again.
    ids = token_ids(length=8)
    full = logits(lm, ids)
    _, _, cache = lm.call_with_cache(ids, lm.get_initial_cache(2), 0)
    out, _, same = lm.call_with_cache(ids[:, -1:], cache, 7)
    np.testing.assert_allclose(out[:, 0], full[:, -1], atol=1e-5)
    np.testing.assert_allclose(same, cache, atol=1e-6)


def test_greedy_generation_of_token_ids_follows_the_full_pass():
    lm = language_model(with_preprocessor=False)
    prompt = token_ids(length=3)
    padded = np.pad(prompt, [(0, 0), (0, 21)])
    mask = np.arange(24)[None, :] < 3
    out = lm.generate(
        inputs(padded, np.repeat(mask, 2, 0)), stop_token_ids=None
    )
    tokens = out["token_ids"]
    assert tokens.shape == (2, 24) and out["padding_mask"].all()
    np.testing.assert_array_equal(tokens[:, :3], prompt)
    # Each generated token is the argmax of the full pass over what
    # precedes it.
    predicted = np.argmax(logits(lm, tokens[:, :-1]), axis=-1)
    np.testing.assert_array_equal(tokens[:, 3:], predicted[:, 2:])


def test_strings_in_and_out(lm):
    text = lm.generate("hello", max_length=20)
    assert isinstance(text, str) and text.startswith("hello")
    batch = lm.generate(["hello", "a"], max_length=20)
    assert isinstance(batch, list) and batch[0] == text
    stripped = lm.generate(["hello", "a"], max_length=20, strip_prompt=True)
    assert stripped[0] == text[len("hello") :]
    assert batch[1] == "a" + stripped[1]


def test_prompts_of_different_lengths_generate_as_one_by_one(lm):
    prompts = ["a", "hello there", "abc"]
    together = lm.generate(prompts, max_length=24, stop_token_ids=None)
    alone = [
        lm.generate(p, max_length=24, stop_token_ids=None) for p in prompts
    ]
    assert together == alone


def test_generation_stops_at_a_stop_token(lm):
    full = lm.preprocessor.generate_preprocess(["hi"], 20)
    lm_ids = language_model(with_preprocessor=False)
    lm_ids.set_weights(lm.get_weights())
    generated = lm_ids.generate(
        {key: np.asarray(value) for key, value in full.items()},
        stop_token_ids=None,
    )
    tokens = generated["token_ids"][0]
    stop = int(tokens[5])  # the third generated token
    first = 3 + list(tokens[3:]).index(stop)
    stopped = lm_ids.generate(
        {key: np.asarray(value) for key, value in full.items()},
        stop_token_ids=[stop],
    )
    mask = stopped["padding_mask"][0]
    # Kept: the prompt and the tokens up to the stop token, included.
    assert mask[: first + 1].all() and not mask[first + 1 :].any()
    np.testing.assert_array_equal(
        stopped["token_ids"][0][: first + 1], tokens[: first + 1]
    )


@pytest.mark.parametrize(
    "sampler",
    [
        "top_k",
        "top_p",
        "random",
        "beam",
        "contrastive",
        keras_hub.samplers.TopKSampler(k=4, seed=1),
    ],
    ids=["top_k", "top_p", "random", "beam", "contrastive", "object"],
)
def test_every_sampler(sampler):
    lm = language_model()
    lm.compile(sampler=sampler)
    texts = lm.generate(["hello", "a"], max_length=16, stop_token_ids=None)
    assert texts[0].startswith("hello") and texts[1].startswith("a")
    assert len(texts[0]) > len("hello") and len(texts[1]) > 1


def test_a_seeded_sampler_gives_the_same_tokens_in_the_same_program(lm):
    def run(seed):
        lm.compile(sampler=keras_hub.samplers.RandomSampler(seed=seed))
        return lm.generate(["hello", "a"], max_length=24, stop_token_ids=None)

    first = run(7)
    assert run(7) == first
    assert run(8) != first
    lm.compile(sampler="greedy")


def test_presets_round_trip_through_keras_hub_base_classes(lm, tmp_path):
    directory = str(tmp_path / "preset")
    lm.compile(sampler="greedy")
    redraw_features(lm, draw=3)  # Draw 3 of each layer's seed.
    expected = lm.generate(["hello", "a"], max_length=20)
    lm.save_to_preset(directory)
    loaded = keras_hub.models.CausalLM.from_preset(directory)
    assert type(loaded) is PerformerCausalLM
    loaded.compile(sampler="greedy")
    assert loaded.generate(["hello", "a"], max_length=20) == expected
    layer = lm.backbone.transformer_layers[1]._self_attention_layer
    same = loaded.backbone.transformer_layers[1]._self_attention_layer
    assert int(np.asarray(same.projection_draw)) == 3
    assert same.seed == layer.seed
    np.testing.assert_array_equal(
        same.projection_matrix, layer.projection_matrix
    )
    backbone = keras_hub.models.Backbone.from_preset(directory)
    assert type(backbone) is PerformerBackbone
    assert backbone.get_config() == lm.backbone.get_config()
    for cls in (
        keras_hub.models.CausalLMPreprocessor,
        PerformerCausalLMPreprocessor,
    ):
        loaded = cls.from_preset(directory)
        assert type(loaded) is PerformerCausalLMPreprocessor
        assert loaded.get_config() == lm.preprocessor.get_config()
    tokenizer = PerformerTokenizer.from_preset(directory)
    assert type(tokenizer) is keras_hub.tokenizers.ByteTokenizer


def test_a_tokenizer_with_a_vocabulary_file_round_trips(tmp_path):
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "a", "b", "c", "##a"]
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary)
    lm = PerformerCausalLM(
        backbone(vocabulary_size=8),
        PerformerCausalLMPreprocessor(
            tokenizer, sequence_length=12, start_token_id=2, end_token_id=3
        ),
    )
    lm.compile(sampler="greedy")
    directory = str(tmp_path / "preset")
    expected = lm.generate("a b", stop_token_ids=None)
    lm.save_to_preset(directory)
    assert os.path.exists(os.path.join(directory, "assets", "tokenizer"))
    for load in (keras_hub.tokenizers.Tokenizer, PerformerTokenizer):
        loaded = load.from_preset(directory)
        assert loaded.get_vocabulary() == vocabulary
    loaded = PerformerCausalLM.from_preset(directory)
    loaded.compile(sampler="greedy")
    assert loaded.generate("a b", stop_token_ids=None) == expected


def test_keras_round_trip(lm, tmp_path):
    config = lm.get_config()
    # keras-hub's `from_config` puts the objects it makes into the dict.
    copied = copy.deepcopy(config)
    assert PerformerCausalLM.from_config(copied).get_config() == config
    path = os.path.join(tmp_path, "lm.keras")
    lm.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    ids = token_ids()
    np.testing.assert_allclose(logits(loaded, ids), logits(lm, ids), atol=1e-6)


def test_keras_hub_layer_names(lm):
    assert lm.backbone.token_embedding.name == "token_embedding"
    names = [layer.name for layer in lm.backbone.transformer_layers]
    assert names == ["transformer_layer_0", "transformer_layer_1"]


def recall_task(size, rng, length=8, vocabulary=8):
    """Random tokens, then a query token (`vocabulary`): the answer is the
    first token, which only attention can bring to the last position."""
    ids = rng.integers(0, vocabulary, size=(size, length + 1)).astype("int32")
    ids[:, -1] = vocabulary
    return ids, ids[:, 0]


# Off TensorFlow, fit is shown by tests/layers/test_kernel_moments.py and
# tests/models/test_performer_text_classifier.py.
@pytest.mark.slow_off_tensorflow
def test_learns_a_task_that_needs_attention():
    rng = np.random.default_rng(0)
    lm = PerformerCausalLM(
        backbone(vocabulary_size=9, hidden_dim=32, num_random_features=64)
    )
    ids, answers = recall_task(2048, rng)
    targets = np.zeros_like(ids)
    targets[:, -1] = answers
    weights = np.zeros(ids.shape, "float32")
    weights[:, -1] = 1.0  # only the answer counts
    lm.compile(
        keras.optimizers.Adam(3e-3), jit_compile=jit_compile(), sampler="greedy"
    )
    lm.fit(
        inputs(ids),
        targets,
        sample_weight=weights,
        epochs=8,
        batch_size=64,
        verbose=0,
    )
    test_ids, test_answers = recall_task(512, rng)
    predicted = np.argmax(logits(lm, test_ids)[:, -1], axis=-1)
    # Chance is 1/8.
    assert np.mean(predicted == test_answers) > 0.9


def test_fit_on_strings(lm):
    model = language_model()
    history = model.fit(["hello world", "a b c", "abc"], batch_size=3, epochs=2)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize(
    "mixed_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True
)
def test_mixed_precision_generation(mixed_policy):
    lm = language_model()
    text = lm.generate("hello", max_length=16, stop_token_ids=None)
    assert text.startswith("hello")


def test_the_old_constructor_says_what_to_write():
    with pytest.raises(
        ValueError, match=r"PerformerCausalLM\(PerformerBackbone"
    ):
        PerformerCausalLM(
            vocabulary_size=16,
            num_layers=1,
            num_heads=2,
            hidden_dim=8,
            intermediate_dim=16,
            max_sequence_length=16,
        )
    with pytest.raises(ValueError, match="causal=True"):
        PerformerCausalLM(backbone(causal=False))


def test_a_preset_of_another_model_is_refused(tmp_path):
    directory = str(tmp_path / "gpt2")
    keras_hub.models.GPT2Backbone(
        vocabulary_size=16,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=16,
    ).save_to_preset(directory)
    with pytest.raises(ValueError, match="GPT2Backbone"):
        PerformerCausalLM.from_preset(directory)
    with pytest.raises(ValueError, match="GPT2Backbone"):
        PerformerBackbone.from_preset(directory)


def test_bad_arguments(lm):
    with pytest.raises(ValueError, match="hidden_dim"):
        backbone(hidden_dim=15)
    with pytest.raises(ValueError, match="num_layers"):
        backbone(num_layers=0)
    with pytest.raises(ValueError, match="vocabulary_size=200"):
        PerformerCausalLM(backbone(vocabulary_size=200), preprocessor())
    with pytest.raises(ValueError, match="start_token_id"):
        PerformerCausalLMPreprocessor(
            keras_hub.tokenizers.ByteTokenizer(), sequence_length=8
        )(["no start token"])
    with pytest.raises(ValueError, match="max_length=4"):
        lm.generate("a long prompt", max_length=4)
    with pytest.raises(ValueError, match="max_sequence_length=64"):
        lm.generate("a", max_length=65)
    with pytest.raises(ValueError, match="no token"):
        PerformerCausalLM(
            backbone(vocabulary_size=256),
            PerformerCausalLMPreprocessor(
                keras_hub.tokenizers.ByteTokenizer(),
                sequence_length=8,
                add_start_token=False,
                add_end_token=False,
            ),
        ).generate("")
    other = language_model(num_layers=3)
    ids = token_ids(length=4)
    with pytest.raises(ValueError, match="cache"):
        lm.call_with_cache(ids, other.get_initial_cache(2), 0)
    other = language_model(num_random_features=32)
    with pytest.raises(ValueError, match="cache"):
        lm.call_with_cache(ids, other.get_initial_cache(2), 0)


BAD_INPUTS = {
    "keys": (lambda lm: lm.backbone({"token_ids": token_ids()}), "keys"),
    # (Called as a model, Keras casts the inputs to the dtypes of the
    # model's inputs first.)
    "rank": (
        lambda lm: lm.call_with_cache(
            np.ones((2, 4, 1), "int32"), lm.get_initial_cache(2), 0
        ),
        "token_ids.shape",
    ),
    "dtype": (
        lambda lm: lm.call_with_cache(
            np.ones((2, 4), "float32"), lm.get_initial_cache(2), 0
        ),
        "float32",
    ),
    "out_of_vocabulary": (
        lambda lm: lm(inputs(np.full((2, 4), 258, "int32"))),
        "from 258 to 258",
    ),
    "negative": (
        lambda lm: lm(inputs(np.full((2, 4), -1, "int32"))),
        "from -1",
    ),
    "too_long": (
        lambda lm: lm(inputs(np.ones((2, 65), "int32"))),
        "max_sequence_length=64",
    ),
    "padding_mask": (
        lambda lm: lm(inputs(np.ones((2, 4), "int32"), np.ones((2, 3), bool))),
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
    "generate_without_a_first_token": (
        lambda lm: PerformerCausalLM(lm.backbone).generate(
            inputs(np.ones((1, 4), "int32"), np.zeros((1, 4), bool)),
            stop_token_ids=None,
        ),
        "at least one token",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_are_named(lm, case):
    call, match = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=match):
        call(lm)


def test_no_start_token_when_none_is_to_be_added():
    preprocessor = PerformerCausalLMPreprocessor(
        keras_hub.tokenizers.ByteTokenizer(),
        sequence_length=6,
        add_start_token=False,
        start_token_id=START,
        end_token_id=END,
    )
    packed = preprocessor.generate_preprocess(["hi"])
    assert np.asarray(packed["token_ids"]).tolist() == [[104, 105, 0, 0, 0, 0]]


def test_a_keras_hub_preprocessor_serves_too():
    # GPT-2's byte-pair tokenizer and preprocessor, with a tiny vocabulary.
    vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "Ġ": 3, "Ġa": 4, "ab": 5}
    tokenizer = keras_hub.tokenizers.GPT2Tokenizer(
        vocabulary=vocabulary, merges=["Ġ a", "a b"]
    )
    gpt2_preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer, sequence_length=8
    )
    lm = PerformerCausalLM(backbone(vocabulary_size=6), gpt2_preprocessor)
    lm.compile(sampler="greedy")
    text = lm.generate("ab a", max_length=8)  # Stops at <|endoftext|>.
    assert isinstance(text, str) and text.startswith("ab a")
    with pytest.raises(ValueError, match="vocabulary_size=7"):
        PerformerCausalLM(backbone(vocabulary_size=7), gpt2_preprocessor)
