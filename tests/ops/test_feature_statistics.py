"""FAVOR++ and FAVOR#: their moments, parameters and estimators."""

import keras
import numpy as np
import pytest

from keras_performer.ops import exact_attention
from keras_performer.ops import favor_attention
from keras_performer.ops import feature_maps
from keras_performer.ops import feature_statistics
from keras_performer.ops import query_key_moments
from keras_performer.ops import sample_projection_matrix
from tests.ops import reference

MOMENT_FEATURE_MAPS = feature_statistics.MOMENT_FEATURE_MAPS
FLOAT64 = np.dtype("float64")


def anisotropic_inputs(seed, batch=2, length=32, heads=2, dim=8, std=0.6):
    """Queries and keys whose per-dimension scales differ (a ratio of up to
    16 in variance between them), where FAVOR#'s rescaling matters."""
    rng = np.random.default_rng(seed)
    query_scales = np.geomspace(0.5, 2.0, dim)
    q = rng.normal(size=(batch, length, heads, dim)) * std * query_scales
    k = rng.normal(size=(batch, length, heads, dim)) * std / query_scales
    return q.astype("float32"), k.astype("float32")


def test_moments_are_those_of_the_valid_tokens():
    q, k = anisotropic_inputs(0)
    q_mask = np.ones((2, 32), bool)
    q_mask[0, 20:] = False
    k_mask = np.ones((2, 32), bool)
    k_mask[1, :5] = False
    moments = np.asarray(query_key_moments(q, k, q_mask, k_mask))
    expected = reference.moments(q, k, key_mask=k_mask, query_mask=q_mask)
    assert moments.shape == (2, 2, 4, 8)
    np.testing.assert_allclose(moments, expected, rtol=1e-5, atol=1e-7)
    # Padded tokens enter nothing, whatever their values.
    q_junk, k_junk = q.copy(), k.copy()
    q_junk[~q_mask], k_junk[~k_mask] = 1e3, -1e3
    np.testing.assert_allclose(
        query_key_moments(q_junk, k_junk, q_mask, k_mask), moments, atol=1e-6
    )
    # Pooled: one set for the batch, over all its valid tokens.
    pooled = np.asarray(query_key_moments(q, k, q_mask, k_mask, pooled=True))
    assert pooled.shape == (1, 2, 4, 8)
    np.testing.assert_allclose(
        pooled[0, :, 0],
        (q[q_mask] * 8**-0.25).mean(0),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_parameters_are_the_papers(feature_map):
    q, k = anisotropic_inputs(1)
    moments = reference.moments(q, k)
    kernel = feature_statistics.kernel_parameters(
        moments.astype("float32"), feature_map
    )
    scale, a = reference.kernel(moments, feature_map)
    np.testing.assert_allclose(
        np.asarray(kernel.query_scale), np.swapaxes(scale, 1, 2), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(kernel.a), np.swapaxes(a, 1, 2), rtol=1e-5
    )
    assert np.all(np.asarray(kernel.a) < 0)
    if feature_map == "optimal_positive":
        np.testing.assert_array_equal(np.asarray(kernel.query_scale), 1.0)


def test_a_minimizes_the_average_log_second_moment():
    # log E[f(w, x)^2 f(w, y)^2] averaged over pairs, per dimension:
    # log(1 - 4A) - log(1 - 8A) / 2 + 2 rho (1 - 4A) / (1 - 8A) + const.
    for rho in (0.05, 0.5, 2.0, 10.0):
        grid = np.linspace(-5.0, 0.1, 200001)
        objective = (
            np.log(1 - 4 * grid)
            - 0.5 * np.log(1 - 8 * grid)
            + 2 * rho * (1 - 4 * grid) / (1 - 8 * grid)
        )
        best = grid[np.argmin(objective)]
        a = float(feature_statistics.optimal_a(np.float32(rho)))
        assert abs(a - best) < 1e-3 * max(1.0, abs(best))
    assert float(feature_statistics.optimal_a(np.float32(0.0))) == 0.0


@pytest.mark.parametrize("coupling", ["orthogonal", "simplex", "iid"])
@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_estimator_is_unbiased(feature_map, coupling):
    # E[phi(q) . phi(k)] = exp(q . k / sqrt(d)) in float64, over 300
    # projection draws, for parameters far from FAVOR+'s (A < 0, scales
    # other than 1).
    q, k = (x[:1, :6, :1].astype("float64") for x in anisotropic_inputs(2))
    kernel = feature_statistics.kernel_parameters(
        reference.moments(q, k), feature_map
    )
    assert float(np.asarray(kernel.a).max()) < -0.05
    q, k = (np.swapaxes(x, 1, 2) for x in (q, k))  # [B, H, L, d]
    estimates = []
    for seed in range(300):
        w = np.asarray(
            sample_projection_matrix(
                64, 8, seed=seed, projection_coupling=coupling
            ),
            np.float64,
        )
        q_parts = feature_maps.feature_parts(q, w, feature_map, kernel)
        k_parts = feature_maps.feature_parts(k, w, feature_map, kernel, True)
        q_features = np.asarray(feature_maps.features(q_parts, 0.0))
        k_features = np.asarray(feature_maps.features(k_parts, 0.0))
        # (JAX computes in float32 unless its x64 mode is on.)
        assert q_features.dtype == FLOAT64 or keras.backend.backend() == "jax"
        estimates.append(np.sum(q_features * k_features, axis=-1))
    expected = np.exp(np.sum(q * k, axis=-1) / np.sqrt(8))
    standard_error = np.std(estimates, axis=0) / np.sqrt(len(estimates))
    assert np.all(standard_error < 0.03 * expected)
    deviation = np.abs(np.mean(estimates, axis=0) - expected)
    assert np.all(deviation < 4 * standard_error)


def output_error(q, k, v, feature_map, kernel_moments=None, seeds=range(16)):
    exact = np.asarray(exact_attention(q, k, v))
    errors = []
    for seed in seeds:
        w = sample_projection_matrix(32, q.shape[-1], seed=seed)
        out = favor_attention(
            q, k, v, w, feature_map=feature_map, moments=kernel_moments
        )
        errors.append(np.mean((np.asarray(out) - exact) ** 2))
    return np.mean(errors)


def test_dense_exponential_scales_the_right_way():
    # Queries scaled by (E y^2 / E x^2)^(1/4) per dimension: the inverse
    # ratio (keys' and queries' moments swapped) is worse than FAVOR++.
    q, k = anisotropic_inputs(3, batch=1, length=64, heads=1, std=1.0)
    v = np.random.default_rng(3).normal(size=q.shape).astype("float32")
    moments = reference.moments(q, k)
    swapped = moments[:, :, [1, 0, 3, 2]].astype("float32")
    favor_sharp = output_error(q, k, v, "dense_exponential")
    inverted = output_error(q, k, v, "dense_exponential", swapped)
    favor_plus_plus = output_error(q, k, v, "optimal_positive")
    assert favor_sharp < favor_plus_plus < inverted


def test_bad_moments():
    q, k = anisotropic_inputs(4)
    w = sample_projection_matrix(8, 8, seed=0)
    with pytest.raises(ValueError, match="moments"):
        favor_attention(
            q, k, k, w, "optimal_positive", moments=np.zeros((2, 2, 3, 8))
        )
    with pytest.raises(ValueError, match="moments"):
        favor_attention(q, k, k, w, "dense_exponential", is_causal=True)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_extreme_parameters_stay_finite_and_exact(feature_map, is_causal):
    # Queries and keys with large means in different dimensions: small
    # logits (no taper), a large rho (A far below 0); and dimensions that
    # are 1e4 times larger in the queries than in the keys (FAVOR#'s scales
    # at their bound).
    rng = np.random.default_rng(5)
    q = rng.normal(size=(1, 24, 1, 8)) * 0.1
    k = rng.normal(size=(1, 24, 1, 8)) * 0.1
    q[..., 0] += 6.0
    k[..., 1] += 6.0
    q[..., 2:4] *= 1e2
    k[..., 2:4] *= 1e-2
    q, k = q.astype("float32"), k.astype("float32")
    v = rng.normal(size=q.shape).astype("float32")
    moments = reference.moments(q, k).astype("float32")
    kernel = feature_statistics.kernel_parameters(moments, feature_map)
    if feature_map == "optimal_positive":
        assert float(np.asarray(kernel.a).max()) < -1.0
    else:  # Its rescaling takes the means' rho away; scales at the bound.
        scales = np.asarray(kernel.query_scale)
        assert scales.min() == pytest.approx(0.01, rel=1e-4)
    w = sample_projection_matrix(64, 8, seed=0)
    out = favor_attention(
        q, k, v, w, feature_map, is_causal=is_causal, moments=moments
    )
    mask = reference.causal_mask(24) if is_causal else 1.0
    expected = reference.favor(q, k, v, w, feature_map, mask, moments=moments)
    assert np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-4, rtol=1e-3)
