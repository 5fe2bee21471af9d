"""Property-based tests of the FAVOR forms (hypothesis) over shapes, masks,
feature maps, chunk sizes and modes. The trigonometric feature map is left
out: its denominators can vanish, so its outputs have no tolerance to test
against (its examples are in test_favor.py and test_causal.py).

Profiles: `ci` (the default, a few examples per property) and `thorough`
(`HYPOTHESIS_PROFILE=thorough pytest tests/ops/test_properties.py`).

On JAX and PyTorch these run with `--run-slow` (`make test-all`): there,
test_favor.py and test_causal.py show the same properties on fixed
examples (the quadratic form, padding, key order, causal prefixes, no
influence of later positions, streaming states), and JAX compiles every
op for every new shape."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_performer.ops import POSITIVE_FEATURE_MAPS
from keras_performer.ops import causal_favor_attention
from keras_performer.ops import favor_attention
from keras_performer.ops import sample_projection_matrix
from tests.ops import reference

FEATURE_MAPS = sorted(set(POSITIVE_FEATURE_MAPS) | {"relu"})
TOLERANCE = dict(atol=2e-5, rtol=2e-4)
# JAX compiles every op for every new shape: on the other backends, which
# run the properties to show that their ops agree, the sizes come from a
# few values, so that examples share compiled shapes.
FEW_SHAPES = keras.backend.backend() != "tensorflow"
pytestmark = [pytest.mark.slow] if FEW_SHAPES else []


def sizes(low, high):
    """Integers from `low` to `high`: any, or three of them on the other
    backends."""
    if FEW_SHAPES:
        return st.sampled_from(sorted({low, (low + high) // 2, high}))
    return st.integers(low, high)


@st.composite
def problems(draw, min_length=1):
    """Inputs, projection, key mask (or None), feature map and chunk size."""
    batch = draw(sizes(1, 2))
    length = draw(sizes(min_length, 40))
    heads = draw(sizes(1, 2))
    dim = draw(st.sampled_from([2, 4, 8]))
    value_dim = draw(sizes(1, 5))
    scale = draw(st.sampled_from([0.1, 0.5, 1.0, 2.0]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    q, k = (
        (scale * rng.normal(size=(batch, length, heads, dim))).astype("f")
        for _ in range(2)
    )
    v = rng.normal(size=(batch, length, heads, value_dim)).astype("float32")
    mask = None
    if draw(st.booleans()):
        mask = rng.random((batch, length)) < draw(st.sampled_from([0.3, 0.8]))
    feature_map = draw(st.sampled_from(FEATURE_MAPS))
    return dict(
        q=q,
        k=k,
        v=v,
        w=sample_projection_matrix(
            draw(st.sampled_from([4, 16])), dim, seed=seed
        ),
        mask=mask,
        feature_map=feature_map,
        chunk_size=draw(sizes(1, 16)),
        # FAVOR++ and FAVOR#: the same fixed moments for every form.
        moments=reference.fixed_moments(feature_map, q, k),
    )


def attend(p, is_causal, q=None, k=None, v=None, mask="same"):
    return np.asarray(
        favor_attention(
            p["q"] if q is None else q,
            p["k"] if k is None else k,
            p["v"] if v is None else v,
            p["w"],
            feature_map=p["feature_map"],
            is_causal=is_causal,
            key_mask=p["mask"] if isinstance(mask, str) else mask,
            chunk_size=p["chunk_size"],
            moments=p["moments"],
        )
    )


def full_mask(p):
    return np.ones(p["k"].shape[:2], bool) if p["mask"] is None else p["mask"]


@given(problems(), st.booleans())
def test_equals_the_quadratic_form_of_the_same_features(p, is_causal):
    length = p["k"].shape[1]
    mask = full_mask(p)[:, None, None, :]
    if is_causal:
        mask = mask * np.tril(np.ones((length, length)))
    expected = reference.favor(
        p["q"], p["k"], p["v"], p["w"], p["feature_map"], mask, p["moments"]
    )
    np.testing.assert_allclose(attend(p, is_causal), expected, **TOLERANCE)


@given(problems(), st.booleans(), sizes(1, 9))
def test_padding_changes_nothing(p, is_causal, extra):
    rng = np.random.default_rng(extra)

    def padded(x):
        noise = 3 * rng.normal(size=(x.shape[0], extra) + x.shape[2:])
        return np.concatenate([x, noise.astype("float32")], axis=1)

    mask = np.concatenate(
        [full_mask(p), np.zeros((p["k"].shape[0], extra), bool)], axis=1
    )
    out = attend(
        p, is_causal, padded(p["q"]), padded(p["k"]), padded(p["v"]), mask
    )
    length = p["k"].shape[1]
    np.testing.assert_allclose(
        out[:, :length], attend(p, is_causal), **TOLERANCE
    )


@given(problems(min_length=2), st.data())
def test_causal_outputs_do_not_depend_on_later_positions(p, data):
    length = p["k"].shape[1]
    position = data.draw(sizes(0, length - 2))
    rng = np.random.default_rng(position)
    changed = {}
    for name in ("q", "k", "v"):
        x = p[name].copy()
        x[:, position + 1 :] = 5 * rng.normal(size=x[:, position + 1 :].shape)
        changed[name] = x
    out = attend(p, True, **changed)
    np.testing.assert_allclose(
        out[:, : position + 1],
        attend(p, True)[:, : position + 1],
        **TOLERANCE,
    )


@given(problems(), st.integers(0, 2**16))
def test_bidirectional_is_invariant_to_key_order(p, seed):
    order = np.random.default_rng(seed).permutation(p["k"].shape[1])
    out = attend(
        p,
        False,
        k=p["k"][:, order],
        v=p["v"][:, order],
        mask=None if p["mask"] is None else p["mask"][:, order],
    )
    np.testing.assert_allclose(out, attend(p, False), **TOLERANCE)


@given(problems(min_length=2), st.data())
def test_streaming_equals_the_full_pass(p, data):
    length = p["k"].shape[1]
    cut = data.draw(sizes(1, length - 1))
    options = dict(
        feature_map=p["feature_map"],
        chunk_size=p["chunk_size"],
        moments=p["moments"],
    )
    mask = full_mask(p)
    full, full_state = causal_favor_attention(
        p["q"], p["k"], p["v"], p["w"], key_mask=mask, **options
    )
    first, state = causal_favor_attention(
        p["q"][:, :cut],
        p["k"][:, :cut],
        p["v"][:, :cut],
        p["w"],
        key_mask=mask[:, :cut],
        **options,
    )
    second, final_state = causal_favor_attention(
        p["q"][:, cut:],
        p["k"][:, cut:],
        p["v"][:, cut:],
        p["w"],
        key_mask=mask[:, cut:],
        initial_state=state,
        **options,
    )
    np.testing.assert_allclose(
        np.concatenate([first, second], axis=1), full, **TOLERANCE
    )
    # States may differ in scale; the keys counted may not.
    np.testing.assert_array_equal(
        np.asarray(final_state)[..., -2], np.asarray(full_state)[..., -2]
    )


@given(problems(), st.data())
def test_causal_row_equals_bidirectional_prefix(p, data):
    i = data.draw(sizes(0, p["k"].shape[1] - 1))
    mask = None if p["mask"] is None else p["mask"][:, : i + 1]
    prefix = attend(
        p,
        False,
        q=p["q"][:, i : i + 1],
        k=p["k"][:, : i + 1],
        v=p["v"][:, : i + 1],
        mask=mask,
    )
    np.testing.assert_allclose(
        attend(p, True)[:, i : i + 1], prefix, **TOLERANCE
    )
