"""PerformerBackbone: a keras-hub backbone, causal or bidirectional."""

import copy

import numpy as np
import pytest

from keras_performer.layers import PerformerDecoder
from keras_performer.layers import PerformerEncoder
from keras_performer.models import PerformerBackbone


def backbone(**kwargs):
    arguments = dict(
        vocabulary_size=32,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=32,
        num_random_features=16,
        seed=0,
    )
    return PerformerBackbone(**{**arguments, **kwargs})


def inputs(ids):
    return {"token_ids": ids, "padding_mask": np.ones(ids.shape, "int32")}


@pytest.mark.parametrize("causal", [True, False])
def test_a_later_token_changes_earlier_outputs_only_without_causality(causal):
    model = backbone(causal=causal)
    block = PerformerDecoder if causal else PerformerEncoder
    assert all(isinstance(b, block) for b in model.transformer_layers)
    ids = np.random.default_rng(0).integers(0, 32, (2, 12)).astype("int32")
    changed = ids.copy()
    changed[:, -1] = (changed[:, -1] + 1) % 32
    before, after = np.asarray(model(inputs(ids))), model(inputs(changed))
    assert before.shape == (2, 12, 16)
    earlier = np.max(np.abs(before[:, :-1] - np.asarray(after)[:, :-1]))
    if causal:
        assert earlier < 1e-6
    else:
        assert earlier > 1e-4


def test_padding_is_not_attended_to():
    model = backbone(causal=False)
    ids = np.random.default_rng(1).integers(1, 32, (1, 10)).astype("int32")
    padded = np.pad(ids, [(0, 0), (0, 6)])
    mask = np.arange(16)[None, :] < 10
    out = model({"token_ids": padded, "padding_mask": mask})
    np.testing.assert_allclose(
        np.asarray(out)[:, :10], model(inputs(ids)), atol=1e-5
    )


def test_rotary_positions_have_no_embedding_and_no_length_limit():
    model = backbone(rotary_max_wavelength=10000, max_sequence_length=8)
    assert not model.learned_positions and model.position_embedding is None
    ids = np.ones((1, 20), "int32")
    assert model(inputs(ids)).shape == (1, 20, 16)


def test_config_round_trip_keeps_the_projections():
    model = backbone(feature_map="hyperbolic")
    config = model.get_config()
    assert config["seed"] == 0 and config["feature_map"] == "hyperbolic"
    again = PerformerBackbone.from_config(copy.deepcopy(config))
    assert again.get_config() == config
    ids = np.ones((1, 6), "int32")
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(again(inputs(ids)), model(inputs(ids)))
