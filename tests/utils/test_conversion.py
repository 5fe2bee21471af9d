"""`convert_to_performer`: keras-hub GPT-2 and BERT models and Keras models
with `MultiHeadAttention` become Performers that approach the original as
the number of features grows, keep working on strings, round trip through
presets, and leave the original unchanged."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_performer
from keras_performer import convert_to_performer
from keras_performer.models import PerformerBackbone
from keras_performer.models import PerformerCausalLM

LENGTH = 12
FEW, MANY = 16, 4096
# GPT-2's byte-pair tokenizer and BERT's word pieces, tiny vocabularies.
BPE_VOCABULARY = {"<|endoftext|>": 0, "a": 1, "b": 2, "Ġ": 3, "Ġa": 4, "ab": 5}
BPE_MERGES = ["Ġ a", "a b"]
WORDPIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "film", "bad"]
TEXTS = ["a film", "a bad film", "bad bad", ""]


def at_tokens(outputs, inputs):
    """Outputs at the tokens, not at padding (where nothing reads them and
    the two attentions differ by design)."""
    return np.asarray(outputs) * inputs["padding_mask"][..., None]


def relative_error(approximation, exact):
    approximation, exact = np.asarray(approximation), np.asarray(exact)
    return np.linalg.norm(approximation - exact) / np.linalg.norm(exact)


def token_inputs(vocabulary_size, batch=2, segments=False):
    rng = np.random.default_rng(0)
    inputs = {
        "token_ids": rng.integers(0, vocabulary_size, (batch, LENGTH)),
        "padding_mask": np.array([[1] * LENGTH, [1] * 8 + [0] * 4])[:batch],
    }
    if segments:
        inputs["segment_ids"] = np.zeros((batch, LENGTH), "int32")
    return inputs


def gpt2_backbone(vocabulary_size=50):
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=32,
        dropout=0.0,
    )


def bert_backbone():
    return keras_hub.models.BertBackbone(
        vocabulary_size=len(WORDPIECES),
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=32,
    )


def gpt2_causal_lm():
    tokenizer = keras_hub.tokenizers.GPT2Tokenizer(
        vocabulary=BPE_VOCABULARY, merges=BPE_MERGES
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer, sequence_length=LENGTH
    )
    return keras_hub.models.GPT2CausalLM(
        gpt2_backbone(len(BPE_VOCABULARY)), preprocessor
    )


def bert_classifier():
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=WORDPIECES),
        sequence_length=LENGTH,
    )
    return keras_hub.models.BertTextClassifier(
        bert_backbone(), 3, preprocessor=preprocessor
    )


def weights_of(model):
    return [np.array(weight) for weight in model.weights]


def errors_at_few_and_many_features(model, inputs, output=lambda y: y):
    """The relative errors of the converted model's outputs at 16 and at
    4,096 features, after checking that the original did not change."""
    exact = output(model(inputs))
    before = weights_of(model)
    classes = [type(layer) for layer in model._flatten_layers()]
    errors = []
    for num_features in (FEW, MANY):
        converted = convert_to_performer(
            model, num_random_features=num_features, seed=0
        )
        errors.append(relative_error(output(converted(inputs)), exact))
    for weight, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), value)
    assert [type(layer) for layer in model._flatten_layers()] == classes
    np.testing.assert_allclose(output(model(inputs)), exact, atol=1e-6)
    return errors


def test_gpt2_backbone_becomes_a_performer_backbone():
    backbone = gpt2_backbone()
    converted = convert_to_performer(backbone, num_random_features=32, seed=3)
    assert isinstance(converted, PerformerBackbone)
    assert converted.causal and converted.num_random_features == 32
    inputs = token_inputs(50)
    few, many = errors_at_few_and_many_features(
        backbone, inputs, output=lambda y: at_tokens(y, inputs)
    )
    assert many < few / 4 and many < 1e-3


def test_bert_backbone_keeps_its_class_with_performer_blocks():
    backbone = bert_backbone()
    inputs = token_inputs(len(WORDPIECES), segments=True)
    converted = convert_to_performer(backbone, num_random_features=32, seed=3)
    assert isinstance(converted, keras_hub.models.BertBackbone)
    assert type(converted).__name__ == "PerformerBertBackbone"
    assert all(
        isinstance(layer, keras_performer.PerformerEncoder)
        for layer in converted.transformer_layers
    )
    # Each block draws its own projection.
    seeds = [int(layer.seed) for layer in converted.transformer_layers]
    assert seeds == [3, 5]
    few, many = errors_at_few_and_many_features(
        backbone,
        inputs,
        output=lambda outputs: at_tokens(outputs["sequence_output"], inputs),
    )
    assert many < few / 4


def test_functional_and_sequential_models_with_multi_head_attention(tmp_path):
    inputs = keras.Input((LENGTH, 16))
    x = keras.layers.MultiHeadAttention(2, 8)(inputs, inputs)
    nested = keras.Sequential(
        [
            keras.Input((LENGTH, 16)),
            keras_hub.layers.TransformerEncoder(32, num_heads=2),
        ]
    )
    outputs = keras.layers.Dense(4)(nested(x))
    model = keras.Model(inputs, outputs)
    converted = convert_to_performer(model, num_random_features=32, seed=0)
    assert type(converted.layers[1]).__name__ == "PerformerAttention"
    assert type(converted.layers[2].layers[0]).__name__ == "PerformerEncoder"
    # Mild inputs: FAVOR+ converges fast where softmax is not too peaked.
    rng = np.random.default_rng(1)
    x = 0.3 * rng.normal(size=(2, LENGTH, 16)).astype("float32")
    few, many = errors_at_few_and_many_features(model, x)
    assert many < few / 4
    path = str(tmp_path / "converted.keras")
    converted.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), converted(x), atol=1e-6)


class Subclassed(keras.Model):
    """Attention as an attribute and blocks in a list."""

    def __init__(self, num_heads=2, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(num_heads, 8)
        self.blocks = [
            keras_hub.layers.TransformerEncoder(32, num_heads) for _ in range(2)
        ]
        self.head = keras.layers.Dense(4)

    def call(self, x):
        x = self.attention(x, x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_subclassed_models_made_again_with_performer_layers():
    model = Subclassed()
    rng = np.random.default_rng(2)
    x = 0.3 * rng.normal(size=(2, LENGTH, 16)).astype("float32")
    model(x)
    converted = convert_to_performer(model, num_random_features=32, seed=0)
    assert type(converted) is Subclassed
    assert type(converted.attention).__name__ == "PerformerAttention"
    assert [type(block).__name__ for block in converted.blocks] == [
        "PerformerEncoder"
    ] * 2
    assert [int(layer.seed) for layer in converted.blocks] == [2, 4]
    assert len(converted.weights) == len(model.weights) + 3 * 3
    few, many = errors_at_few_and_many_features(model, x)
    assert many < few / 4

    class NoConfig(Subclassed):
        def __init__(self, layer_list):
            super().__init__()

    unconfigurable = NoConfig([keras.layers.Dense(1)])
    unconfigurable(x)
    with pytest.raises(ValueError, match="from its config"):
        convert_to_performer(unconfigurable)


def test_gpt2_causal_lm_generates_strings_through_the_constant_cache():
    causal_lm = gpt2_causal_lm()
    inputs = token_inputs(len(BPE_VOCABULARY))
    few, many = errors_at_few_and_many_features(
        causal_lm, inputs, output=lambda y: at_tokens(y, inputs)
    )
    assert many < few / 4
    converted = convert_to_performer(causal_lm, num_random_features=64, seed=0)
    assert isinstance(converted, PerformerCausalLM)
    assert converted.preprocessor is causal_lm.preprocessor
    converted.compile(sampler="greedy")
    text = converted.generate("ab a", max_length=LENGTH)
    assert isinstance(text, str) and text.startswith("ab a")
    # The cache of one block: the causal FAVOR+ state (heads, features,
    # ...), not keys and values for each position.
    cache = converted.backbone.transformer_layers[0].get_initial_cache(1)
    assert tuple(cache.shape)[:3] == (1, 2, 64)


def test_bert_classifier_keeps_classifying_strings(tmp_path):
    classifier = bert_classifier()
    exact = classifier.predict(TEXTS, verbose=0)
    converted = convert_to_performer(classifier, num_random_features=MANY)
    assert type(converted).__name__ == "PerformerBertTextClassifier"
    assert converted.preprocessor is classifier.preprocessor
    scores = converted.predict(TEXTS, verbose=0)
    assert relative_error(scores, exact) < 0.01
    # Presets: the task through keras-hub's base class, and the backbone.
    converted.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.TextClassifier.from_preset(str(tmp_path))
    assert type(loaded) is type(converted)
    assert loaded.backbone.num_random_features == MANY
    np.testing.assert_allclose(
        loaded.predict(TEXTS, verbose=0), scores, atol=1e-5
    )
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert type(backbone) is type(converted.backbone)


def test_converted_causal_lm_preset_round_trip(tmp_path):
    converted = convert_to_performer(gpt2_causal_lm(), seed=5)
    converted.compile(sampler="greedy")
    text = converted.generate("ab a", max_length=LENGTH)
    converted.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.CausalLM.from_preset(str(tmp_path))
    assert isinstance(loaded, PerformerCausalLM)
    assert isinstance(
        loaded.preprocessor, keras_hub.models.GPT2CausalLMPreprocessor
    )
    loaded.compile(sampler="greedy")
    assert loaded.generate("ab a", max_length=LENGTH) == text


def test_unconvertible_attention_is_named():
    llama = keras_hub.models.LlamaBackbone(
        vocabulary_size=20,
        num_layers=1,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )
    with pytest.raises(ValueError, match=r"self_attention \(LlamaAttention\)"):
        convert_to_performer(llama)
    inputs = keras.Input((LENGTH, 8))
    outputs = keras.layers.Attention(name="dot")([inputs, inputs])
    with pytest.raises(ValueError, match=r"dot \(Attention\)"):
        convert_to_performer(keras.Model(inputs, outputs))

    class Wrapper(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.MultiHeadAttention(2, 4, name="inner")

        def call(self, x):
            return self.inner(x, x)

    inputs = keras.Input((LENGTH, 8))
    wrapped = keras.Model(inputs, Wrapper(name="wrapper")(inputs))
    with pytest.raises(ValueError, match=r"inner \(MultiHeadAttention\)"):
        convert_to_performer(wrapped)
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no attention layer"):
        convert_to_performer(dense)


def test_bad_arguments():
    backbone = gpt2_backbone()
    with pytest.raises(ValueError, match="num_features"):
        convert_to_performer(backbone, num_features=64)
    with pytest.raises(ValueError, match="rotary_max_wavelength"):
        convert_to_performer(backbone, rotary_max_wavelength=10000)
    with pytest.raises(ValueError, match="takes a model"):
        convert_to_performer(keras.layers.MultiHeadAttention(2, 4))
    with pytest.raises(ValueError, match="already has Performer"):
        convert_to_performer(convert_to_performer(backbone))

    with pytest.raises(ValueError, match="built"):
        convert_to_performer(keras.Sequential([keras.layers.Dense(2)]))


def test_longer_sequences_than_the_original_learned():
    classifier = bert_classifier()
    converted = convert_to_performer(classifier, max_sequence_length=80)
    assert converted.backbone.max_sequence_length == 80
    assert converted.preprocessor.sequence_length == 80
    assert classifier.preprocessor.sequence_length == LENGTH
    # The trained positions, repeated.
    (source,) = classifier.backbone.position_embedding.weights
    (target,) = converted.backbone.position_embedding.weights
    np.testing.assert_array_equal(
        np.asarray(target), np.tile(np.asarray(source), (3, 1))[:80]
    )
    long_text = " ".join(["a bad film"] * 20)  # 60 tokens and [CLS], [SEP].
    packed = converted.preprocessor([long_text])
    assert np.asarray(packed["padding_mask"]).sum() == 62
    assert np.all(np.isfinite(converted.predict([long_text], verbose=0)))
    lm = convert_to_performer(gpt2_causal_lm(), max_sequence_length=64)
    assert lm.backbone.max_sequence_length == 64
    lm.compile(sampler="greedy")
    assert lm.generate("ab a", max_length=40).startswith("ab a")
    inputs = keras.Input((LENGTH, 8))
    model = keras.Model(
        inputs, keras.layers.MultiHeadAttention(2, 4)(inputs, inputs)
    )
    with pytest.raises(ValueError, match="keras-hub models"):
        convert_to_performer(model, max_sequence_length=64)


@pytest.mark.parametrize(
    "name",
    [
        "AlbertBackbone",
        "DistilBertBackbone",
        "ElectraBackbone",
        "RobertaBackbone",
        "XLMRobertaBackbone",
    ],
)
def test_other_keras_hub_encoders(name):
    cls = getattr(keras_hub.models, name)
    sizes = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32)
    sizes["max_sequence_length"] = 32
    if name == "ElectraBackbone":
        sizes.update(vocab_size=30, embedding_dim=8)
    else:
        sizes["vocabulary_size"] = 30
    if name == "AlbertBackbone":
        sizes.update(embedding_dim=8, num_groups=1, num_inner_repetitions=1)
    backbone = cls(**sizes)
    inputs = token_inputs(30, segments="segment_ids" in backbone.input)

    def sequence_output(outputs):
        if isinstance(outputs, dict):
            outputs = outputs["sequence_output"]
        return at_tokens(outputs, inputs)

    converted = convert_to_performer(backbone, seed=0)
    assert isinstance(converted, cls)
    assert type(converted).__name__ == "Performer" + name
    few, many = errors_at_few_and_many_features(
        backbone, inputs, output=sequence_output
    )
    assert many < few / 4
