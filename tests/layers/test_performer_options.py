"""The Performer options: the same names, defaults, checks and docs in the
attention layer, both blocks and the language model."""

import pytest

import keras_performer
from keras_performer.layers import performer_options

CLASSES = {
    keras_performer.PerformerAttention: dict(num_heads=2, key_dim=4),
    keras_performer.PerformerEncoder: dict(intermediate_dim=8, num_heads=2),
    keras_performer.PerformerDecoder: dict(intermediate_dim=8, num_heads=2),
    keras_performer.PerformerBackbone: dict(
        vocabulary_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=8,
        max_sequence_length=16,
    ),
}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_takes_the_options_with_the_same_defaults(cls):
    config = cls(**CLASSES[cls]).get_config()
    for name, default in performer_options.DEFAULTS.items():
        if name == "seed":  # A seed is picked once and kept.
            assert isinstance(config["seed"], int)
        else:
            assert config[name] == default, name
    options = {
        "feature_map": "hyperbolic",
        "num_random_features": 12,
        "projection_coupling": "simplex",
        "projection_norm": "sqrt_d",
        "chunk_size": 4,
        "rotary_max_wavelength": 100,
        "redraw": False,
        "seed": 3,
    }
    assert set(options) == set(performer_options.DEFAULTS)
    layer = cls(**CLASSES[cls], **options)
    for name, value in options.items():
        assert getattr(layer, name) == value
    restored = cls.from_config(layer.get_config())
    assert performer_options.performer_options(restored) == options


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_documents_every_option(cls):
    for name in performer_options.DEFAULTS:
        assert f"\n        {name}: " in cls.__doc__, name
    assert "{performer_options}" not in cls.__doc__
    assert "{block_arguments}" not in cls.__doc__


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize(
    "name, value",
    [
        ("feature_map", "laplace"),
        ("num_random_features", 0),
        ("projection_coupling", "random"),
        ("orthogonal", "yes"),
        ("projection_norm", "l2"),
        ("chunk_size", -1),
        ("rotary_max_wavelength", 0),
        ("redraw", 1),
        ("seed", -2),
    ],
)
def test_every_class_checks_every_option(cls, name, value):
    with pytest.raises(ValueError, match=f"Received: {name}={value}"):
        cls(**CLASSES[cls], **{name: value})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_a_misspelled_option_is_refused(cls):
    with pytest.raises(ValueError, match="num_random_feature"):
        cls(**CLASSES[cls], num_random_feature=8)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_the_former_orthogonal_argument_still_loads(cls):
    # Configs and .keras files written before `projection_coupling`.
    for orthogonal, coupling in ((True, "orthogonal"), (False, "iid")):
        layer = cls(**CLASSES[cls], orthogonal=orthogonal)
        assert layer.projection_coupling == coupling
        config = layer.get_config()
        assert "orthogonal" not in config
        config["orthogonal"] = orthogonal
        del config["projection_coupling"]
        assert cls.from_config(config).projection_coupling == coupling
    with pytest.raises(ValueError, match="contradicts"):
        cls(**CLASSES[cls], orthogonal=False, projection_coupling="simplex")
