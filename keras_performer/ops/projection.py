"""Random projection matrices for FAVOR+ features, and their seeds."""

import random

import numpy as np
from keras import ops

from keras_performer.ops.checks import check_draw
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.checks import check_seed

PROJECTION_NORMS = ("chi", "sqrt_d")


def sample_projection_matrix(
    num_random_features,
    dim,
    seed=None,
    orthogonal=True,
    projection_norm="chi",
    draw=0,
):
    """Samples the random projection `W` of the FAVOR+ feature maps.

    Orthogonal rows come in blocks of `dim`, each block the transposed `Q` of
    the QR decomposition of a Gaussian `dim x dim` matrix, with the signs
    corrected so that `Q` is uniformly (Haar) distributed (Choromanski et al.
    2021, Sec. 2.4). The matrix is drawn on the host with NumPy and is a
    pure function of `(seed, draw)`: the same on every run, replica,
    machine and Keras backend, with no communication between them.

    Args:
        num_random_features: int. Number of rows `m` (random features);
            the feature maps make `num_features(feature_map, m)` features
            of them.
        dim: int. Number of columns `d` (the head dimension).
        seed: int or `None`. Seed of the draw; `None` draws fresh entropy.
            Defaults to `None`.
        orthogonal: bool. Whether rows inside each block of `dim` rows are
            exactly orthogonal; `False` draws i.i.d. Gaussian rows. Defaults
            to `True`.
        projection_norm: str. Row norms: `"chi"` draws them from the chi(d)
            distribution, as the norms of Gaussian vectors (unbiased
            estimator), `"sqrt_d"` sets all of them to `sqrt(d)` (lower
            variance, slightly biased).
            Defaults to `"chi"`.
        draw: int. Draw number, for redrawing during training: each
            `(seed, draw)` pair gives its own matrix, and draw `0` is the
            matrix of `seed` alone. Defaults to `0`.

    Returns:
        A float32 tensor of shape `(num_random_features, dim)`.

    Example:

    >>> w = keras_performer.ops.sample_projection_matrix(128, 64, seed=1)
    >>> tuple(w.shape)
    (128, 64)

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """
    check_positive_int("num_random_features", num_random_features)
    check_positive_int("dim", dim)
    check_seed(seed)
    check_draw(draw)
    if projection_norm not in PROJECTION_NORMS:
        raise ValueError(
            f"`projection_norm` must be one of {PROJECTION_NORMS}. "
            f"Received: projection_norm={projection_norm}"
        )
    # NumPy's SeedSequence pads entropy with zeros: (seed, 0) is seed.
    rng = np.random.default_rng(None if seed is None else (seed, draw))
    if orthogonal:
        num_blocks = -(-num_random_features // dim)
        blocks = []
        for _ in range(num_blocks):
            q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
            blocks.append((q * np.sign(np.diag(r))).T)
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


def concrete_seed(seed):
    """`seed`, or a new one when it is `None`: drawn from Python's `random`,
    so `keras.utils.set_random_seed` makes it reproducible. A layer keeps
    it, so that its later random draws can be made again."""
    return random.randint(0, 2**31 - 1) if seed is None else seed
