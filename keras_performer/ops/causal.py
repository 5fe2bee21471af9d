"""Causal (unidirectional) FAVOR attention, chunked, with a carried state.

Query `i` sees keys `j <= i` (paper, Sec. 2.3):

    out_i = q'_i S_i / (q'_i . z_i),  S_i = sum_{j<=i} k'_j v_j^T,
    z_i = sum_{j<=i} k'_j.

Shapes, here and in every comment below: `B` batch, `H` heads, `L` length
(padded to whole chunks), `C` chunk size, `N = L / C` chunks, `F` features,
`D` value size (`D + 1` with the column of ones that carries `z` beside
`S`).

The sequence is cut into chunks of `C` tokens, in four steps: stabilizers
(`_stabilizers`), inside each chunk the masked quadratic form (`_in_chunk`),
between chunks the sums `(S, z)` of all earlier chunks (`_between_chunks`),
and the state after the last token (`state_from_sums`). That is exact and
never forms an `[L, F, D]` tensor. One pass takes at most 64 chunks, so that
its `(N + 1)^2` carry stays small; longer sequences run in segments of 32
chunks, the state carried from each to the next (`_segments`): time linear
in `L`, training memory of one segment's intermediates plus the inputs.
Decoding feeds the state from call to call: constant memory and time per
token.

Stabilizer, exact and causal: `R_i`, the running max of the keys'
log-features over positions `<= i` (and the incoming state). Key `j` is
scaled by `exp(-R_j)` and its product with query `i >= j` by
`exp(R_j - R_i) <= 1`: every term query `i` sums carries the same factor
`exp(-R_i)`, which cancels, and nothing depends on a later key. Features are
never added a constant that would not cancel.
"""

import keras
from keras import ops

from keras_performer.ops import feature_maps
from keras_performer.ops import feature_statistics
from keras_performer.ops.checks import check_attention_inputs
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.masks import lower_triangle
from keras_performer.ops.numerics import floored_max
from keras_performer.ops.numerics import heads_first
from keras_performer.ops.numerics import normalize
from keras_performer.ops.numerics import with_ones

DEFAULT_CHUNK_SIZE = 128


def empty_state(batch_size, num_heads, num_features, value_dim):
    """The empty state of `causal_favor_attention`: no keys seen yet.

    Args:
        batch_size: int.
        num_heads: int.
        num_features: int. Length of the feature vectors, e.g. from
            `keras_performer.ops.num_features`.
        value_dim: int.

    Returns:
        A float32 tensor `(batch_size, num_heads, num_features,
        value_dim + 3)`: `[..., :value_dim]` holds `S`, `[..., value_dim]`
        holds `z`, `[..., value_dim + 1]` the number of keys absorbed and
        `[..., value_dim + 2]` the log-scale `R` of `S` and `z` (the last
        two equal along the feature axis).
    """
    sums = ops.zeros((batch_size, num_heads, num_features, value_dim + 2))
    log_scale = ops.full(
        (batch_size, num_heads, num_features, 1), feature_maps.NO_KEYS
    )
    return ops.concatenate([sums, log_scale], axis=-1)


def state_length(state):
    """Number of keys a state of `causal_favor_attention` has absorbed,
    `(batch,)` float32."""
    return state[:, 0, 0, -2]


def unseen_positions(state, start, length):
    """Boolean `(batch, length)`: which of `length` tokens at positions
    `start` onwards a state has not absorbed yet (it holds positions `0` to
    `n - 1`, fed in order)."""
    positions = ops.cast(start, "float32") + ops.arange(length, dtype="float32")
    return positions[None, :] >= state_length(state)[:, None]


def causal_favor_attention(
    query,
    key,
    value,
    projection_matrix,
    feature_map="softmax",
    key_mask=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    initial_state=None,
    moments=None,
):
    """Causal FAVOR attention that also returns the state after the inputs.

    Passing the returned state as `initial_state` of the next call continues
    the sequence: one call over `L` tokens equals any split of them into
    consecutive calls (to float32 round-off).

    Time and memory are linear in the length. Up to 64 chunks (8,192 tokens
    at the default `chunk_size`) the whole sequence is one vectorized pass;
    longer ones run in segments of 32 chunks, one after the other, each
    recomputed in the backward pass: training memory then holds the inputs
    and one segment's intermediates (262,144 tokens, 8 heads of 64 and 256
    features train in 9 GB), for 4 to 6% more forward+backward time than
    one pass over 16,384 to 65,536 tokens (measured on a 2-core CPU).

    Args:
        query: tensor of shape `(batch, length, heads, dim)`.
        key: tensor of shape `(batch, length, heads, dim)`.
        value: tensor of shape `(batch, length, heads, value_dim)`.
        projection_matrix: tensor `(num_random_features, dim)`.
        feature_map: str. As in `favor_attention`. Defaults to `"softmax"`.
        key_mask: optional boolean tensor `(batch, length)`, `False` at
            padded keys. Defaults to `None`.
        chunk_size: int. Tokens per chunk: each token costs `chunk_size`
            products inside its chunk, and each chunk a state of
            `num_features x (value_dim + 1)`; `128` balances the two for
            256 features of 64 (measured: other sizes, and sizes chosen
            from the shapes, were no faster at 8,192 tokens). Defaults to
            `128`.
        initial_state: optional state of the tokens before these, from
            `empty_state()` or an earlier call. Defaults to `None` (none).
        moments: float32 tensor `(batch or 1, heads, 4, dim)`, from
            `keras_performer.ops.query_key_moments`, needed by
            `"optimal_positive"` and `"dense_exponential"`: fixed for the
            whole sequence (and every call that continues it), since
            moments of the sequence itself would let later tokens change
            earlier outputs. Layers keep a running average of them.
            Defaults to `None`.

    Returns:
        Tuple `(output, state)`: output of shape `(batch, length, heads,
        value_dim)` in the dtype of `query`, and the float32 state.
    """
    check_positive_int("chunk_size", chunk_size)
    dtype = query.dtype
    query, key, value, key_mask = check_attention_inputs(
        query, key, value, key_mask, True, projection_matrix
    )
    kernel = feature_statistics.kernel_of(feature_map, moments, query)
    value_dim = value.shape[-1]
    if initial_state is None:
        # Broadcast over the batch from `key`: its size may be unknown
        # (symbolic inputs, which a JAX array's `+` on the left rejects).
        initial_state = ops.zeros_like(key[:, :1, :, :1])[
            :, 0, :, :, None
        ] + empty_state(
            1,
            key.shape[2],
            feature_maps.num_features(feature_map, projection_matrix.shape[0]),
            value_dim,
        )
    initial_state = ops.cast(initial_state, "float32")
    length = query.shape[1]
    form = _causal_form
    # (Symbolic inputs only need the shapes, which one pass gives.)
    if (
        isinstance(length, int)
        and length > _ONE_PASS_CHUNKS * chunk_size
        and not isinstance(query, keras.KerasTensor)
    ):
        form = _segments
    out, state = form(
        query,
        key,
        value,
        projection_matrix,
        feature_map,
        key_mask,
        chunk_size,
        initial_state,
        kernel,
    )
    return ops.cast(out, dtype), state


# Sequences of up to `_ONE_PASS_CHUNKS` chunks take one pass; longer ones
# go in segments of `_SEGMENT_CHUNKS` chunks (see `_segments`).
_ONE_PASS_CHUNKS = 64
_SEGMENT_CHUNKS = 32


def _segments(
    query,
    key,
    value,
    projection_matrix,
    feature_map,
    key_mask,
    chunk_size,
    initial_state,
    kernel,
):
    """The causal form over consecutive segments of `_SEGMENT_CHUNKS`
    chunks, in a loop that carries the state from each to the next. Each
    segment is recomputed in the backward pass (`keras.remat`) rather than
    kept, so that memory holds the intermediates of one segment at a time."""
    segment = _SEGMENT_CHUNKS * chunk_size
    length = query.shape[1]
    padding = (-length) % segment
    if key_mask is None and padding:
        key_mask = ops.ones_like(key[:, :, 0, 0], dtype="bool")

    def to_segments(x):  # [B, L, ...] -> [L / segment, B, segment, ...]
        x = ops.pad(x, [(0, 0), (0, padding)] + [(0, 0)] * (len(x.shape) - 2))
        shape = (x.shape[1] // segment, segment) + tuple(x.shape[2:])
        return ops.moveaxis(ops.reshape(x, (-1,) + shape), 1, 0)

    inputs = [to_segments(x) for x in (query, key, value)]
    if key_mask is not None:
        # As floats: the rematerialized gradient covers every argument.
        inputs.append(to_segments(ops.cast(key_mask, "float32")))
    # The projection and the kernel parameters are arguments, not captures:
    # a rematerialized function may not capture tensors.
    constants = [ops.convert_to_tensor(projection_matrix)]
    if kernel is not None:
        constants.extend(kernel)

    @keras.remat
    def step(state, *arguments):
        projection_matrix, *arguments = arguments
        step_kernel = None
        if kernel is not None:
            step_kernel = feature_statistics.KernelParameters(*arguments[:2])
            arguments = arguments[2:]
        query, key, value, *key_mask = arguments
        return _causal_form(
            query,
            key,
            value,
            projection_matrix,
            feature_map,
            ops.cast(key_mask[0], "bool") if key_mask else None,
            chunk_size,
            state,
            step_kernel,
        )

    state, outputs = _scan(
        lambda state, inputs: step(state, *constants, *inputs),
        initial_state,
        inputs,
    )
    outputs = ops.moveaxis(outputs, 0, 1)  # [B, L / segment, segment, ...]
    outputs = ops.reshape(
        outputs, (-1, outputs.shape[1] * segment) + tuple(outputs.shape[3:])
    )
    return outputs[:, :length], state


def _scan(step, state, inputs):
    """Runs `output, state = step(state, inputs[i])` over the leading axis
    of `inputs`, one step after the other; returns the last state and the
    outputs stacked.

    `keras.ops.scan` on JAX and PyTorch. On TensorFlow, a `tf.while_loop`
    with a trip count: Keras 3.15's TensorFlow scan sets none, which XLA
    needs to differentiate a loop (and wants outputs shaped as the state).
    """
    if keras.backend.backend() != "tensorflow":

        def body(state, inputs):
            output, state = step(state, inputs)
            return state, output

        return ops.scan(body, state, tuple(inputs))
    import tensorflow as tf

    steps = inputs[0].shape[0]
    arrays = [
        tf.TensorArray(x.dtype, size=steps, element_shape=x.shape[1:]).unstack(
            x
        )
        for x in inputs
    ]
    outputs = tf.TensorArray("float32", size=steps)

    def body(index, state, outputs):
        output, state = step(state, [array.read(index) for array in arrays])
        return index + 1, state, outputs.write(index, output)

    _, state, outputs = tf.while_loop(
        lambda index, state, outputs: index < steps,
        body,
        (0, state, outputs),
        maximum_iterations=steps,
        parallel_iterations=1,  # One segment's intermediates at a time.
    )
    return state, outputs.stack()


def _causal_form(
    query,
    key,
    value,
    projection_matrix,
    feature_map,
    key_mask,
    chunk_size,
    initial_state,
    kernel=None,
):
    """The chunked causal form of float32 inputs; see the module docstring.
    `kernel`: the `KernelParameters` of FAVOR++ and FAVOR#. Returns the
    float32 output and state."""
    batch_size, length, num_heads, _ = ops.shape(key)
    if batch_size is None:  # Symbolic inputs: the reshapes infer it.
        batch_size = -1
    value_dim = value.shape[-1]
    # Pad the length to whole chunks; padded keys are masked out.
    if isinstance(length, int):
        chunk_size = min(chunk_size, length)
    padding = (-length) % chunk_size
    # Without padding of any kind, no mask: it would cost passes.
    masked = key_mask is not None or not isinstance(padding, int) or padding
    if key_mask is None:
        key_mask = ops.ones_like(key[:, :, 0, 0], dtype="bool")
    query, key, value = (
        heads_first(ops.pad(x, [(0, 0), (0, padding), (0, 0), (0, 0)]))
        for x in (query, key, value)
    )
    key_mask = ops.pad(key_mask, [(0, 0), (0, padding)], constant_values=False)
    key_mask = key_mask[:, None, :]  # [B, 1, L]: rows of [B, H, L, F]
    padded_length = length + padding
    chunks = _Chunks(
        batch_size, num_heads, padded_length // chunk_size, chunk_size
    )

    query_parts = feature_maps.feature_parts(
        query, projection_matrix, feature_map, kernel
    )
    key_parts = feature_maps.feature_parts(
        key, projection_matrix, feature_map, kernel, is_key=True
    )
    state_log_scale = initial_state[:, :, :1, value_dim + 2]  # [B, H, 1]
    running_max, chunk_end_max = _stabilizers(
        key_parts, key_mask, state_log_scale, chunks
    )
    query_chunks = chunks.split(feature_maps.query_features(query_parts))
    key_chunks = chunks.split(
        feature_maps.features(
            key_parts,
            chunks.join(running_max)[..., None],
            mask=key_mask if masked else None,
        )
    )
    # A column of ones after the values carries the denominator along.
    value_chunks = chunks.split(with_ones(value))

    out = _in_chunk(query_chunks, key_chunks, value_chunks, running_max)
    prefix_sums, final_sums = _between_chunks(
        key_chunks,
        value_chunks,
        running_max,
        chunk_end_max,
        initial_state[..., : value_dim + 1],
        chunks,
    )
    from_chunk_start = ops.exp(chunk_end_max[..., :-1, None] - running_max)
    out += from_chunk_start[..., None] * ops.matmul(query_chunks, prefix_sums)

    numerator, denominator = ops.split(out, [value_dim], axis=-1)
    out = chunks.join(normalize(numerator, denominator))
    out = heads_first(out[:, :, :length])
    new_keys = ops.sum(ops.cast(key_mask, "float32"), axis=-1)  # [B, 1]
    final_state = state_from_sums(
        final_sums,
        initial_state[..., value_dim + 1 : value_dim + 2]
        + new_keys[:, :, None, None],
        chunk_end_max[..., -1],
    )
    return out, final_state


class _Chunks:
    """Reshapes `[B, H, L, ...]` to `[B, H, N, C, ...]` and back."""

    def __init__(self, batch_size, num_heads, num_chunks, chunk_size):
        self.leading = (batch_size, num_heads)
        self.chunks = (num_chunks, chunk_size)

    def split(self, x):
        return ops.reshape(x, self.leading + self.chunks + tuple(x.shape[3:]))

    def join(self, x):
        length = self.chunks[0] * self.chunks[1]
        return ops.reshape(x, self.leading + (length,) + tuple(x.shape[4:]))


def _stabilizers(key_parts, key_mask, state_log_scale, chunks):
    """The running max `R_i` of the keys' log-features over positions
    `<= i` and the incoming state, `[B, H, N, C]`, and `E`, `R` at each
    chunk boundary, `[B, H, N + 1]` (before chunk 0, after chunk 0, ...,
    after the last). Key `j` is scaled by `exp(-R_j)` and its product with
    query `i >= j` by `exp(R_j - R_i) <= 1`. No gradient flows through
    them: they cancel."""
    key_max = feature_maps.row_log_max(key_parts)
    if key_max is None:  # Features with no exponential factor.
        key_max = ops.zeros_like(key_parts.factor[..., 0])
    else:
        key_max = ops.where(key_mask, key_max[..., 0], feature_maps.NO_KEYS)
    inner_max = _running_max(chunks.split(key_max))  # [B, H, N, C]
    chunk_end_max = _running_max(
        ops.concatenate(
            [ops.stop_gradient(state_log_scale), inner_max[..., -1]], axis=2
        )
    )
    running_max = ops.maximum(chunk_end_max[..., :-1, None], inner_max)
    return running_max, chunk_end_max


def _in_chunk(query_chunks, key_chunks, value_chunks, running_max):
    """The masked quadratic form inside each chunk, `[B, H, N, C, D + 1]`,
    each product scaled by `exp(R_j - R_i)`."""
    chunk_size = query_chunks.shape[3]
    rescale = running_max[..., None, :] - running_max[..., :, None]
    rescale = ops.where(lower_triangle(chunk_size), rescale, float("-inf"))
    scores = ops.matmul(query_chunks, ops.swapaxes(key_chunks, 3, 4))
    return ops.matmul(scores * ops.exp(rescale), value_chunks)


def _between_chunks(
    key_chunks, value_chunks, running_max, chunk_end_max, initial_sums, chunks
):
    """The sums `k' v^T` of the state and all earlier chunks, at the start
    of each chunk (`[B, H, N, F, D + 1]`, scaled to `E` there) and after the
    last (`[B, H, F, D + 1]`).

    Each chunk's sums are scaled to its end, then summed up to each chunk
    by `_prefix_sums`."""
    to_chunk_end = ops.exp(running_max - chunk_end_max[..., 1:, None])
    sums = ops.concatenate(
        [
            initial_sums[:, :, None],
            ops.matmul(
                ops.swapaxes(key_chunks, 3, 4),
                value_chunks * to_chunk_end[..., None],
            ),
        ],
        axis=2,
    )  # [B, H, N + 1, F, D + 1]

    sums_shape = tuple(sums.shape[3:])  # (F, D + 1)
    starts, end = _prefix_sums(
        ops.reshape(
            sums,
            chunks.leading
            + (chunks.chunks[0] + 1, sums_shape[0] * sums_shape[1]),
        ),
        chunk_end_max,
    )
    return (
        ops.reshape(starts, chunks.leading + chunks.chunks[:1] + sums_shape),
        ops.reshape(end, chunks.leading + sums_shape),
    )


def state_from_sums(sums, num_keys, log_scale):
    """The state `[B, H, F, D + 3]` from its sums `[B, H, F, D + 1]`, the
    number of keys `[B, H or 1, 1, 1]` and the log-scale `[B, H]`."""
    num_keys = ops.zeros_like(sums[..., :1]) + num_keys
    return ops.concatenate(
        [sums, num_keys, ops.zeros_like(num_keys) + log_scale[..., None, None]],
        axis=-1,
    )


def _running_max(x):
    """`max(x[..., :i + 1])` for each `i`, for `x` of shape `[..., M]`: a
    chunk, or the chunk boundaries of one pass (at most 65)."""
    earlier_or_same = lower_triangle(ops.shape(x)[-1])  # [i, j]
    candidates = ops.where(earlier_or_same, x[..., None, :], float("-inf"))
    return floored_max(candidates, -1, feature_maps.NO_KEYS)


def _prefix_sums(sums, scales):
    """`P_i = sum_{j <= i} exp(s_j - s_i) x_j` for sums `x` `[B, H, M, X]`
    at log-scales `s` `[B, H, M]` that never decrease, so that no factor
    exceeds 1: one lower-triangular product, `M x M` (at most 65 chunk
    states a pass). Returns `P` but its last row `[B, H, M - 1, X]`, and its
    last row `[B, H, X]`."""
    log_weights = scales[..., None, :] - scales[..., :, None]  # [i, j]
    earlier_or_same = lower_triangle(ops.shape(scales)[2])
    weights = ops.exp(ops.where(earlier_or_same, log_weights, float("-inf")))
    # Slicing the small matrix, not the product, keeps gradients cheap.
    return (
        ops.matmul(weights[:, :, :-1], sums),
        ops.matmul(weights[:, :, -1:], sums)[:, :, 0],
    )
