import numpy as np
import pytest

from keras_performer.ops import FEATURE_MAPS
from keras_performer.ops import attend_to_state
from keras_performer.ops import causal_favor_attention
from keras_performer.ops import exact_attention
from keras_performer.ops import favor_attention
from keras_performer.ops import favor_attention_scores
from keras_performer.ops import feature_maps
from keras_performer.ops import key_value_state
from keras_performer.ops import masked_favor_attention
from keras_performer.ops import sample_projection_matrix
from tests.ops import reference


def random_inputs(seed, batch=2, length=64, heads=2, dim=16, scale=0.7):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(batch, length, heads, dim)) * scale
    k = rng.normal(size=(batch, length, heads, dim)) * scale
    v = rng.normal(size=(batch, length, heads, dim))
    return q.astype("float32"), k.astype("float32"), v.astype("float32")


def golden_case(golden, case):
    return (
        golden[f"{case}/{name}"]
        for name in ("query", "key", "value", "projection")
    )


@pytest.mark.parametrize("case", ["small", "medium"])
def test_relu_matches_authors_implementation(golden, case):
    q, k, v, w = golden_case(golden, case)
    out = np.asarray(favor_attention(q, k, v, w, feature_map="relu"))
    expected = golden[f"{case}/relu_bidirectional"]
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case,atol", [("small", 2e-2), ("medium", 3e-3)])
def test_softmax_close_to_authors_implementation(golden, case, atol):
    # The authors add 1e-6 to features stabilized by the max of W k alone;
    # the constant does not cancel, so their outputs differ from the exact
    # estimator (ours, checked against the unstabilized float64 form) by up
    # to 1.1e-2 (small) and 1.7e-3 (medium): the ~2e-2 their README allows
    # for another convention.
    q, k, v, w = golden_case(golden, case)
    out = np.asarray(favor_attention(q, k, v, w))
    np.testing.assert_allclose(
        out, golden[f"{case}/softmax_bidirectional"], atol=atol, rtol=0
    )
    expected = reference.favor(q, k, v, w, "softmax")
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case,error", [("small", 0.22), ("medium", 0.04)])
def test_error_against_exact_matches_reference(golden, case, error):
    q, k, v, w = (
        golden[f"{case}/{name}"]
        for name in ("query", "key", "value", "projection")
    )
    exact = np.asarray(exact_attention(q, k, v))
    np.testing.assert_allclose(
        exact, golden[f"{case}/exact_bidirectional"], atol=1e-5
    )
    out = np.asarray(favor_attention(q, k, v, w))
    assert np.mean(np.abs(out - exact)) < error


def errors(feature_map, num_random_features, coupling, seeds, is_causal=False):
    q, k, v = random_inputs(0)
    exact = np.asarray(exact_attention(q, k, v, is_causal=is_causal))
    result = []
    for seed in seeds:
        w = sample_projection_matrix(
            num_random_features, 16, seed=seed, projection_coupling=coupling
        )
        out = favor_attention(
            q, k, v, w, feature_map=feature_map, is_causal=is_causal
        )
        result.append(np.mean((np.asarray(out) - exact) ** 2))
    return np.array(result)


def mean_error(*args, **kwargs):
    return np.mean(errors(*args, **kwargs))


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("feature_map", ["softmax", "hyperbolic", "trig"])
def test_error_falls_with_more_features(feature_map, is_causal):
    medians = [
        np.median(errors(feature_map, m, "orthogonal", range(5), is_causal))
        for m in (16, 64, 256)
    ]
    assert medians[0] > medians[1] > medians[2]
    assert medians[2] < 0.5 * medians[0]


@pytest.mark.parametrize("coupling", ["orthogonal", "simplex"])
@pytest.mark.parametrize("feature_map", ["softmax", "hyperbolic"])
def test_coupled_rows_no_worse_than_iid(feature_map, coupling):
    # Measured over 64 draws: orthogonal rows cut the error by 20-35% at
    # m = 64, d = 16 (the gain shrinks as m grows past d); over these 24,
    # simplex rows by 19% (softmax) and 21% (hyperbolic).
    seeds = range(24)
    coupled = mean_error(feature_map, 64, coupling, seeds)
    iid = mean_error(feature_map, 64, "iid", seeds)
    assert coupled <= iid


@pytest.mark.parametrize("coupling", ["orthogonal", "simplex", "iid"])
@pytest.mark.parametrize("feature_map", ["softmax", "hyperbolic", "trig"])
def test_estimator_is_unbiased(feature_map, coupling):
    # E[phi(q) . phi(k)] = exp(q . k / sqrt(d)), over projection draws.
    rng = np.random.default_rng(1)
    dim = 8
    q = rng.normal(size=(6, dim)).astype("float32") * 0.6
    k = rng.normal(size=(6, dim)).astype("float32") * 0.6
    estimates = []
    for seed in range(300):
        w = sample_projection_matrix(
            64, dim, seed=seed, projection_coupling=coupling
        )
        q_parts = feature_maps.feature_parts(q, w, feature_map)
        k_parts = feature_maps.feature_parts(k, w, feature_map)
        q_features = np.asarray(feature_maps.features(q_parts, 0.0))
        k_features = np.asarray(feature_maps.features(k_parts, 0.0))
        estimates.append(np.sum(q_features * k_features, axis=-1))
    expected = np.exp(np.sum(q * k, axis=-1) / np.sqrt(dim))
    # Within 4 standard errors of the mean over draws, which is itself
    # small enough for the test to mean something.
    standard_error = np.std(estimates, axis=0) / np.sqrt(len(estimates))
    assert np.all(standard_error < 0.03 * expected)
    deviation = np.abs(np.mean(estimates, axis=0) - expected)
    assert np.all(deviation < 4 * standard_error)


@pytest.mark.parametrize("feature_map", ["softmax", "hyperbolic"])
def test_positive_features_are_positive(feature_map):
    q, _, _ = random_inputs(2, scale=3.0)
    w = sample_projection_matrix(32, 16, seed=0)
    parts = feature_maps.feature_parts(q, w, feature_map)
    phi = np.asarray(feature_maps.features(parts, 0.0))
    assert np.all(phi >= 0)


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_bidirectional_equals_quadratic_form(feature_map):
    q, k, v = random_inputs(3)
    w = sample_projection_matrix(32, 16, seed=0)
    # FAVOR++ and FAVOR# from the moments of the inputs themselves.
    out = np.asarray(favor_attention(q, k, v, w, feature_map=feature_map))
    expected = reference.favor(
        q, k, v, w, feature_map, moments=reference.moments(q, k)
    )
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_bidirectional_is_invariant_to_key_order(feature_map):
    q, k, v = random_inputs(3, length=20)
    w = sample_projection_matrix(32, 16, seed=0)
    key_mask = np.ones((2, 20), bool)
    key_mask[1, 13:] = False
    order = np.random.default_rng(0).permutation(20)
    out, shuffled = (
        np.asarray(
            favor_attention(
                q, k[:, i], v[:, i], w, feature_map, key_mask=key_mask[:, i]
            )
        )
        for i in (np.arange(20), order)
    )
    np.testing.assert_allclose(shuffled, out, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_causal_rows_equal_bidirectional_prefixes(feature_map):
    # One estimator in both modes: causal row i is the bidirectional output
    # over positions 0..i.
    q, k, v = random_inputs(4, length=24)
    w = sample_projection_matrix(32, 16, seed=0)
    moments = reference.fixed_moments(feature_map, q, k)
    causal = np.asarray(
        favor_attention(
            q,
            k,
            v,
            w,
            feature_map=feature_map,
            is_causal=True,
            chunk_size=8,
            moments=moments,
        )
    )
    for i in (0, 7, 8, 15, 23):
        prefix = np.asarray(
            favor_attention(
                q[:, i : i + 1],
                k[:, : i + 1],
                v[:, : i + 1],
                w,
                feature_map=feature_map,
                moments=moments,
            )
        )
        np.testing.assert_allclose(
            causal[:, i : i + 1], prefix, atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("feature_map", ["softmax", "hyperbolic"])
def test_key_of_large_norm_does_not_flush_the_others(feature_map):
    q, k, v = random_inputs(5)
    w = sample_projection_matrix(32, 16, seed=0)
    k[:, 10] *= 8.0
    out = np.asarray(favor_attention(q, k, v, w, feature_map=feature_map))
    expected = reference.favor(q, k, v, w, feature_map)
    # (With the authors' stabilizer, max of W k and 1e-6 added, the other
    # keys' features fall under the 1e-6: near-uniform attention.)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_padded_keys_change_nothing(feature_map, is_causal):
    q, k, v = random_inputs(4, length=40)
    w = sample_projection_matrix(32, 16, seed=0)
    key_mask = np.ones((2, 40), bool)
    key_mask[0, 30:] = False
    key_mask[1, 5:12] = False
    # Bidirectional: the moments of the valid keys, which must not see the
    # padding either; causal: fixed.
    moments = reference.fixed_moments(feature_map, q, k) if is_causal else None
    outputs = []
    for junk in (0.0, 50.0):
        k_junk, v_junk = k.copy(), v.copy()
        k_junk[~key_mask] = junk
        v_junk[~key_mask] = -junk
        outputs.append(
            np.asarray(
                favor_attention(
                    q,
                    k_junk,
                    v_junk,
                    w,
                    feature_map=feature_map,
                    is_causal=is_causal,
                    key_mask=key_mask,
                    chunk_size=16,
                    moments=moments,
                )
            )
        )
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6, rtol=1e-6)
    if not is_causal:
        # The first sequence's padding is at the end: same as dropping it.
        unpadded = favor_attention(
            q[:1], k[:1, :30], v[:1, :30], w, feature_map=feature_map
        )
        np.testing.assert_allclose(
            outputs[0][:1], np.asarray(unpadded), atol=1e-6, rtol=1e-6
        )


@pytest.mark.parametrize("is_causal", [False, True])
def test_query_that_sees_no_key_outputs_zero(is_causal):
    q, k, v = random_inputs(5, length=8)
    w = sample_projection_matrix(16, 16, seed=0)
    key_mask = np.ones((2, 8), bool)
    key_mask[0] = False
    key_mask[1, :3] = False
    for attention in (favor_attention, exact_attention):
        kwargs = {"key_mask": key_mask, "is_causal": is_causal}
        args = (q, k, v, w) if attention is favor_attention else (q, k, v)
        out = np.asarray(attention(*args, **kwargs))
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[0], 0.0)
        if is_causal:
            np.testing.assert_array_equal(out[1, :3], 0.0)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_scores_times_values_is_the_output(feature_map, is_causal):
    q, k, v = random_inputs(6, length=24)
    w = sample_projection_matrix(32, 16, seed=0)
    key_mask = np.ones((2, 24), bool)
    key_mask[1, -5:] = False
    moments = reference.fixed_moments(feature_map, q, k) if is_causal else None
    options = dict(
        feature_map=feature_map,
        is_causal=is_causal,
        key_mask=key_mask,
        moments=moments,
    )
    scores = favor_attention_scores(q, k, w, **options)
    out = favor_attention(q, k, v, w, **options)
    scores = np.asarray(scores)
    assert scores.shape == (2, 2, 24, 24)
    np.testing.assert_allclose(
        np.einsum("bhts,bshd->bthd", scores, v),
        np.asarray(out),
        atol=2e-4,
        rtol=2e-4,
    )
    assert np.all(scores[1, :, :, -5:] == 0)
    if is_causal:
        assert np.all(np.triu(scores[0, 0], k=1) == 0)


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_masked_form_equals_the_quadratic_form(feature_map, per_head):
    q, k, v = random_inputs(7, length=20)
    k, v = k[:, :13], v[:, :13]  # Any target and source lengths.
    w = sample_projection_matrix(32, 16, seed=0)
    rng = np.random.default_rng(0)
    mask = rng.random((2, 2 if per_head else 1, 20, 13)) < 0.5
    mask[0, :, 4] = False  # A query that sees no key.
    out = np.asarray(
        masked_favor_attention(
            q, k, v, w, mask if per_head else mask[:, 0], feature_map
        )
    )
    expected = reference.favor(
        q, k, v, w, feature_map, mask=mask, moments=reference.moments(q, k)
    )
    tolerance = 1e-3 if feature_map == "trig" else 1e-5
    np.testing.assert_allclose(out, expected, atol=tolerance, rtol=1e-4)
    np.testing.assert_array_equal(out[0, 4], 0.0)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_masked_form_of_a_padding_pattern_is_the_linear_form(
    feature_map, is_causal
):
    q, k, v = random_inputs(8, length=24)
    w = sample_projection_matrix(32, 16, seed=0)
    key_mask = np.ones((2, 24), bool)
    key_mask[1, -5:] = False
    moments = reference.fixed_moments(feature_map, q, k)
    linear = favor_attention(
        q,
        k,
        v,
        w,
        feature_map,
        is_causal=is_causal,
        key_mask=key_mask,
        moments=moments,
    )
    pattern = np.broadcast_to(key_mask[:, None, :], (2, 24, 24))
    if is_causal:
        pattern = pattern & np.tril(np.ones((24, 24), bool))
    masked = masked_favor_attention(
        q, k, v, w, pattern, feature_map, moments=moments
    )
    tolerance = 1e-3 if feature_map == "trig" else 2e-5
    np.testing.assert_allclose(masked, linear, atol=tolerance, rtol=1e-4)


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_a_key_no_query_sees_changes_nothing(feature_map):
    # Each row is stabilized by the keys it sees: a hidden key of large norm
    # flushes no visible one.
    q, k, v = random_inputs(9, length=16)
    w = sample_projection_matrix(32, 16, seed=0)
    mask = np.tril(np.ones((16, 16), bool))[None].repeat(2, 0)
    # Fixed moments: those of all the keys would see the hidden one.
    moments = reference.fixed_moments(feature_map, q, k)
    out = np.asarray(
        masked_favor_attention(q, k, v, w, mask, feature_map, moments=moments)
    )
    far = k.copy()
    far[:, -1] *= 30.0
    changed = masked_favor_attention(
        q, far, v, w, mask, feature_map, moments=moments
    )
    np.testing.assert_allclose(
        np.asarray(changed)[:, :-1], out[:, :-1], atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_attention_to_a_key_value_state_is_bidirectional_attention(
    feature_map,
):
    q, k, v = random_inputs(10, length=24)
    w = sample_projection_matrix(32, 16, seed=0)
    key_mask = np.ones((2, 24), bool)
    key_mask[0, 17:] = False
    moments = reference.fixed_moments(feature_map, q, k)
    state = key_value_state(
        k, v, w, feature_map, key_mask=key_mask, moments=moments
    )
    assert tuple(state.shape) == (
        2,
        2,
        feature_maps.num_features(feature_map, 32),
        16 + 3,
    )
    expected = favor_attention(
        q, k, v, w, feature_map, key_mask=key_mask, moments=moments
    )
    out = attend_to_state(q[:, :5], state, w, feature_map, moments=moments)
    np.testing.assert_allclose(out, np.asarray(expected)[:, :5], atol=1e-5)
    # The layout of the causal state after the same keys: the same keys
    # counted, the same attention.
    _, causal_state = causal_favor_attention(
        k,
        k,
        v,
        w,
        feature_map,
        key_mask=key_mask,
        chunk_size=8,
        moments=moments,
    )
    np.testing.assert_array_equal(
        np.asarray(state)[..., -2], np.asarray(causal_state)[..., -2]
    )
    np.testing.assert_allclose(
        attend_to_state(
            q[:, :5], causal_state, w, feature_map, moments=moments
        ),
        out,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((2, 8, 16), (2, 8, 16), (2, 8, 16)), "rank 4"),
        (((2, 8, 2, 16), (2, 8, 3, 16), (2, 8, 3, 16)), "heads"),
        (((2, 8, 2, 16), (2, 8, 2, 8), (2, 8, 2, 8)), "dim"),
        (((2, 8, 2, 16), (2, 9, 2, 16), (2, 8, 2, 16)), "length"),
        (((2, 8, 2, 16), (1, 8, 2, 16), (1, 8, 2, 16)), "batch"),
    ],
)
def test_bad_shapes(shapes, match):
    q, k, v = (np.zeros(s, "float32") for s in shapes)
    w = sample_projection_matrix(8, 16, seed=0)
    with pytest.raises(ValueError, match=match):
        favor_attention(q, k, v, w)


def test_bad_projection_mask_and_kernel():
    q, k, v = random_inputs(0, length=8)
    with pytest.raises(ValueError, match="projection_matrix"):
        favor_attention(q, k, v, sample_projection_matrix(8, 12, seed=0))
    w = sample_projection_matrix(8, 16, seed=0)
    with pytest.raises(ValueError, match="key_mask"):
        favor_attention(q, k, v, w, key_mask=np.ones((2, 9), bool))
    with pytest.raises(ValueError, match="feature_map"):
        favor_attention(q, k, v, w, feature_map="cosine")
    with pytest.raises(ValueError, match="length"):
        favor_attention(q[:, :4], k, v, w, is_causal=True)
