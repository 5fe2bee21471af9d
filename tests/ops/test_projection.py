import numpy as np
import pytest

from keras_performer.ops import sample_projection_matrix


@pytest.mark.parametrize(
    "num_random_features,dim", [(64, 16), (100, 32), (8, 16)]
)
def test_orthogonal_blocks(num_random_features, dim):
    w = np.asarray(sample_projection_matrix(num_random_features, dim, seed=3))
    assert w.shape == (num_random_features, dim)
    for start in range(0, num_random_features, dim):
        block = w[start : start + dim]
        directions = block / np.linalg.norm(block, axis=1, keepdims=True)
        gram = directions @ directions.T
        np.testing.assert_allclose(gram, np.eye(len(block)), atol=1e-5)


def test_sqrt_d_norms():
    w = np.asarray(
        sample_projection_matrix(40, 16, seed=0, projection_norm="sqrt_d")
    )
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 4.0, rtol=1e-5)
    w = np.asarray(
        sample_projection_matrix(
            40, 16, seed=0, projection_coupling="iid", projection_norm="sqrt_d"
        )
    )
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 4.0, rtol=1e-5)


@pytest.mark.parametrize("coupling", ["orthogonal", "simplex", "iid"])
def test_chi_norms_and_isotropy(coupling):
    # chi(d) norms: E|w|^2 = d; uniform directions: E[w w^T] = I. Each row
    # is marginally Gaussian, whatever the coupling.
    w = np.asarray(
        sample_projection_matrix(
            20000,
            8,
            seed=1,
            projection_coupling=coupling,
            projection_norm="chi",
        )
    )
    np.testing.assert_allclose(np.mean(np.sum(w**2, axis=1)), 8.0, rtol=0.03)
    np.testing.assert_allclose(w.T @ w / len(w), np.eye(8), atol=0.05)


def test_sign_correction_gives_uniform_rotations():
    # Without the sign correction of the QR factor, the first coordinate of
    # the first row would be biased to one sign.
    first = [
        float(
            sample_projection_matrix(4, 4, seed=s, projection_norm="sqrt_d")[
                0, 0
            ]
        )
        for s in range(400)
    ]
    assert abs(np.mean(np.sign(first))) < 0.15


def test_same_seed_same_matrix():
    a = sample_projection_matrix(48, 16, seed=7)
    b = sample_projection_matrix(48, 16, seed=7)
    c = sample_projection_matrix(48, 16, seed=8)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_random_features": 0, "dim": 4}, "num_random_features"),
        ({"num_random_features": 4, "dim": 2.5}, "dim"),
        (
            {"num_random_features": 4, "dim": 4, "projection_norm": "unit"},
            "projection_norm",
        ),
        ({"num_random_features": 4, "dim": 4, "seed": "a"}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_projection_matrix(**kwargs)


@pytest.mark.parametrize("num_random_features,dim", [(64, 16), (20, 8)])
def test_simplex_blocks(num_random_features, dim):
    w = np.asarray(
        sample_projection_matrix(
            num_random_features, dim, seed=3, projection_coupling="simplex"
        )
    )
    assert w.shape == (num_random_features, dim)
    for start in range(0, num_random_features, dim):
        block = w[start : start + dim]
        directions = block / np.linalg.norm(block, axis=1, keepdims=True)
        gram = directions @ directions.T
        # A regular simplex: unit vectors, inner products -1 / (d - 1).
        expected = np.full_like(gram, -1 / (dim - 1))
        np.fill_diagonal(expected, 1.0)
        np.testing.assert_allclose(gram, expected, atol=1e-5)
    again = sample_projection_matrix(
        num_random_features, dim, seed=3, projection_coupling="simplex"
    )
    np.testing.assert_array_equal(np.asarray(again), w)


def test_the_former_orthogonal_argument():
    for orthogonal, coupling in ((True, "orthogonal"), (False, "iid")):
        np.testing.assert_array_equal(
            np.asarray(
                sample_projection_matrix(24, 8, seed=2, orthogonal=orthogonal)
            ),
            np.asarray(
                sample_projection_matrix(
                    24, 8, seed=2, projection_coupling=coupling
                )
            ),
        )
    with pytest.raises(ValueError, match="contradicts"):
        sample_projection_matrix(
            8, 4, orthogonal=True, projection_coupling="iid"
        )
    with pytest.raises(ValueError, match="projection_coupling"):
        sample_projection_matrix(8, 4, projection_coupling="antithetic")
