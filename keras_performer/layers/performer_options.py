"""The Performer options: the arguments that `PerformerAttention`, the
blocks and the models share, under the same names, with their defaults,
checks, documentation and config round trip in this one place."""

from keras_performer.ops import feature_maps
from keras_performer.ops.causal import DEFAULT_CHUNK_SIZE
from keras_performer.ops.checks import check_non_negative_int
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.projection import PROJECTION_NORMS
from keras_performer.ops.projection import check_projection_coupling
from keras_performer.ops.projection import concrete_seed
from keras_performer.ops.projection import coupling_from_orthogonal

# Name: default, in the order of the layers' configs.
DEFAULTS = {
    "feature_map": "softmax",
    "num_random_features": 256,
    "projection_coupling": "orthogonal",
    "projection_norm": "chi",
    "chunk_size": DEFAULT_CHUNK_SIZE,
    "rotary_max_wavelength": None,
    "redraw": True,
    "seed": None,
}

# The options' `Args:` entries, put in the docstrings of the classes that
# take them (`document`).
DOCS = f"""\
feature_map: str. Random feature map: `"softmax"` (positive random
    features, FAVOR+), `"hyperbolic"` (positive +/- features, lower
    variance), `"optimal_positive"` (FAVOR++, Likhosherstov et al. 2022)
    or `"dense_exponential"` (FAVOR#, Likhosherstov et al. 2023): positive
    features whose parameters come from the moments of the queries and
    keys (of each sequence in bidirectional attention; a running average
    of the training batches, the `query_key_moments` weight, in causal
    attention, decoding and other masks, so that no output depends on a
    later token), `"trig"` (sin/cos features of the original FAVOR, can be
    unstable) or `"relu"` (generalized attention). Defaults to
    `"softmax"`.
num_random_features: int. Rows `m` of each random projection; the
    feature map makes `m` features of them (`2m` for `"hyperbolic"` and
    `"trig"`). Defaults to `256`.
projection_coupling: str. How the directions of each block of
    `key_dim` projection rows are drawn together: `"orthogonal"` (lower
    variance than i.i.d.), `"simplex"` (a rotated regular simplex: a lower
    mean squared error of the kernel estimate than orthogonal blocks in
    Reid et al. 2023) or `"iid"`. The former boolean `orthogonal`
    (`True`: `"orthogonal"`, `False`: `"iid"`) is still accepted, so
    configs and `.keras` files that have it load. Defaults to
    `"orthogonal"`.
projection_norm: str. Row norms of the projection: `"chi"` (unbiased) or
    `"sqrt_d"` (lower variance). Defaults to `"chi"`.
chunk_size: int. Tokens per chunk of the causal form (see
    `keras_performer.ops.causal_favor_attention`). Defaults to
    `{DEFAULT_CHUNK_SIZE}`.
rotary_max_wavelength: int. When set, queries and keys get a rotary
    position embedding (`keras_hub.layers.RotaryEmbedding` with this
    maximum wavelength, e.g. `10000`) before the feature map (in blocks,
    those of self-attention only); the key dimension must be even.
    Defaults to `None` (no rotary embedding).
redraw: bool. Whether the projections may be redrawn (`redraw_features`,
    `keras_performer.callbacks.FeatureRedraw`); `False` freezes the
    features. Defaults to `True`.
seed: int. Seed of the random projections and of dropout; each attention
    layer inside a block or a model derives its own from it. With
    `None`, one is picked once and kept (in the config and the weights),
    so that every later draw can be made again. Defaults to `None`."""


def pop_performer_options(kwargs):
    """Takes the Performer options out of a constructor's `kwargs`: a dict
    of all of them, defaults filled in, checked; raises `ValueError`."""
    orthogonal = kwargs.pop("orthogonal", None)  # The former name.
    options = {
        name: kwargs.pop(name, default) for name, default in DEFAULTS.items()
    }
    options["projection_coupling"] = coupling_from_orthogonal(
        options["projection_coupling"], orthogonal
    )
    check_performer_options(**options)
    return options


def check_performer_options(
    feature_map,
    num_random_features,
    projection_coupling,
    projection_norm,
    chunk_size,
    rotary_max_wavelength,
    redraw,
    seed,
):
    """Validates the Performer options; raises `ValueError`."""
    feature_maps.check_feature_map(feature_map)
    check_positive_int("num_random_features", num_random_features)
    check_projection_coupling(projection_coupling)
    if projection_norm not in PROJECTION_NORMS:
        raise ValueError(
            f"`projection_norm` must be one of {PROJECTION_NORMS}. "
            f"Received: projection_norm={projection_norm}"
        )
    check_positive_int("chunk_size", chunk_size)
    if rotary_max_wavelength is not None:
        check_positive_int("rotary_max_wavelength", rotary_max_wavelength)
    if not isinstance(redraw, bool):
        raise ValueError(f"`redraw` must be a bool. Received: redraw={redraw}")
    check_non_negative_int("seed", seed, allow_none=True)


def set_performer_options(layer, options):
    """Sets each option as the attribute of the same name; a `None` seed
    becomes a concrete one, kept in the layer's config."""
    for name, value in options.items():
        setattr(layer, name, value)
    layer.seed = concrete_seed(options["seed"])


def performer_options(layer):
    """The Performer options of a layer or model, as a dict (its config)."""
    return {name: getattr(layer, name) for name in DEFAULTS}


def fill_docstring(cls, placeholder, text):
    """Puts `text` in place of the line `{placeholder}` of the class
    docstring, at that line's indent; returns the class."""
    lines = []
    for line in cls.__doc__.splitlines():
        if line.strip() == "{" + placeholder + "}":
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + entry for entry in text.splitlines())
        else:
            lines.append(line)
    cls.__doc__ = "\n".join(lines)
    return cls


def document(cls):
    """Class decorator: the options' `Args:` entries in place of the line
    `{performer_options}` of the class docstring."""
    return fill_docstring(cls, "performer_options", DOCS)
