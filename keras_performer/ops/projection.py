"""Random projection matrices for FAVOR+ features, and their seeds."""

import random

import numpy as np
from keras import ops

from keras_performer.ops.checks import check_non_negative_int
from keras_performer.ops.checks import check_positive_int

PROJECTION_NORMS = ("chi", "sqrt_d")
PROJECTION_COUPLINGS = ("orthogonal", "simplex", "iid")


def sample_projection_matrix(
    num_random_features,
    dim,
    seed=None,
    projection_coupling="orthogonal",
    projection_norm="chi",
    draw=0,
    orthogonal=None,
):
    """Samples the random projection `W` of the FAVOR+ feature maps.

    Rows come in blocks of `dim` whose directions are coupled: orthogonal
    blocks are the transposed `Q` of the QR decomposition of a Gaussian
    `dim x dim` matrix, the signs corrected so that `Q` is uniformly (Haar)
    distributed (Choromanski et al. 2021, Sec. 2.4); simplex blocks are the
    `dim` unit vectors of a regular simplex (pairwise inner products
    `-1 / (dim - 1)`) turned by such a `Q` (Reid et al. 2023). Each row is
    still marginally Gaussian (a uniform direction times a chi(d) norm), so
    every positive feature map stays unbiased. The matrix is drawn on the
    host with NumPy and is a pure function of `(seed, draw)`: the same on
    every run, replica, machine and Keras backend, with no communication
    between them.

    Args:
        num_random_features: int. Number of rows `m` (random features);
            the feature maps make `num_features(feature_map, m)` features
            of them.
        dim: int. Number of columns `d` (the head dimension).
        seed: int or `None`. Seed of the draw; `None` draws fresh entropy.
            Defaults to `None`.
        projection_coupling: str. How the directions of each block of
            `dim` rows are drawn together: `"orthogonal"` (exactly
            orthogonal, lower variance than i.i.d.), `"simplex"` (a rotated
            regular simplex: a lower mean squared error of the kernel
            estimate than orthogonal blocks in Reid et al. 2023) or
            `"iid"` (independent Gaussian rows). Defaults to `"orthogonal"`.
        projection_norm: str. Row norms: `"chi"` draws them from the chi(d)
            distribution, as the norms of Gaussian vectors (unbiased
            estimator), `"sqrt_d"` sets all of them to `sqrt(d)` (lower
            variance, slightly biased).
            Defaults to `"chi"`.
        draw: int. Draw number, for redrawing during training: each
            `(seed, draw)` pair gives its own matrix, and draw `0` is the
            matrix of `seed` alone. Defaults to `0`.
        orthogonal: bool. The former name of the coupling: `True` is
            `"orthogonal"`, `False` `"iid"`. Defaults to `None` (use
            `projection_coupling`).

    Returns:
        A float32 tensor of shape `(num_random_features, dim)`.

    Example:

    >>> w = keras_performer.ops.sample_projection_matrix(128, 64, seed=1)
    >>> tuple(w.shape)
    (128, 64)

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
        - [Reid et al., 2023](https://arxiv.org/abs/2301.13856)
    """
    projection_coupling = coupling_from_orthogonal(
        projection_coupling, orthogonal
    )
    check_projection_coupling(projection_coupling)
    check_positive_int("num_random_features", num_random_features)
    check_positive_int("dim", dim)
    check_non_negative_int("seed", seed, allow_none=True)
    check_non_negative_int("draw", draw)
    if projection_norm not in PROJECTION_NORMS:
        raise ValueError(
            f"`projection_norm` must be one of {PROJECTION_NORMS}. "
            f"Received: projection_norm={projection_norm}"
        )
    # NumPy's SeedSequence pads entropy with zeros: (seed, 0) is seed.
    rng = np.random.default_rng(None if seed is None else (seed, draw))
    if projection_coupling != "iid":
        num_blocks = -(-num_random_features // dim)
        blocks = []
        for _ in range(num_blocks):
            q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
            rotation = (q * np.sign(np.diag(r))).T
            if projection_coupling == "simplex":
                rotation = _simplex(dim) @ rotation
            blocks.append(rotation)
        rows = np.concatenate(blocks)[:num_random_features]
        row_norms = np.linalg.norm(
            rng.standard_normal((num_random_features, dim)), axis=1
        )
    else:
        rows = rng.standard_normal((num_random_features, dim))
        row_norms = np.linalg.norm(rows, axis=1)
        rows = rows / row_norms[:, None]
    if projection_norm == "sqrt_d":
        row_norms = np.full(num_random_features, np.sqrt(dim))
    return ops.convert_to_tensor(rows * row_norms[:, None], dtype="float32")


def _simplex(dim):
    """The `dim` unit vectors of a regular simplex centred at the origin,
    as rows: `e_i - 1/dim`, normalized, with inner products
    `-1 / (dim - 1)`. (For `dim = 1` the one vector `[1]`.)"""
    if dim == 1:
        return np.ones((1, 1))
    vertices = np.eye(dim) - 1.0 / dim
    return vertices / np.linalg.norm(vertices, axis=1, keepdims=True)


def check_projection_coupling(projection_coupling):
    if projection_coupling not in PROJECTION_COUPLINGS:
        raise ValueError(
            f"`projection_coupling` must be one of {PROJECTION_COUPLINGS}. "
            f"Received: projection_coupling={projection_coupling}"
        )


def coupling_from_orthogonal(projection_coupling, orthogonal):
    """The coupling, from the former boolean `orthogonal` when it is given
    (`True`: `"orthogonal"`, `False`: `"iid"`); raises `ValueError` when the
    two disagree or `orthogonal` is not a bool."""
    if orthogonal is None:
        return projection_coupling
    if not isinstance(orthogonal, bool):
        raise ValueError(
            f"`orthogonal` must be a bool. Received: orthogonal={orthogonal}"
        )
    implied = "orthogonal" if orthogonal else "iid"
    if projection_coupling not in ("orthogonal", implied):
        raise ValueError(
            f"`orthogonal={orthogonal}` (the former argument) contradicts "
            f"projection_coupling={projection_coupling!r}: give "
            "`projection_coupling` alone"
        )
    return implied


def concrete_seed(seed):
    """`seed`, or a new one when it is `None`: drawn from Python's `random`,
    so `keras.utils.set_random_seed` makes it reproducible. A layer keeps
    it, so that its later random draws can be made again."""
    return random.randint(0, 2**31 - 1) if seed is None else seed
