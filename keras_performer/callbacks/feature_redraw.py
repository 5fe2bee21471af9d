"""FeatureRedraw: periodic redraws of the random features in training."""

import keras
from keras import ops

from keras_performer.layers.performer_attention import PerformerAttention
from keras_performer.ops.checks import check_non_negative_int
from keras_performer.ops.checks import check_positive_int


class FeatureRedraw(keras.callbacks.Callback):
    """Redraws the random projections of a model's Performer layers.

    Every `interval` training steps, each `PerformerAttention` in the model
    (nested in blocks, layers and sub-models included; frozen ones, built
    with `redraw=False`, excepted) gets a new projection. Training with
    periodic redraws avoids the plateau that fixed features reach
    (Choromanski et al. 2021, Sec. 4.3).

    After step `t` (the optimizer's `iterations`), every layer holds draw
    number `min(t, until) // interval` of its own seed. A draw is a pure
    function of the seed and the draw number, so:

    - under `tf.distribute` (one or several machines, GPUs or TPUs) every
      replica and worker draws the same matrix, with no communication;
    - after `BackupAndRestore` or a reload, training goes on with the
      projections of an uninterrupted run (`iterations` and the layers'
      draw numbers are in the checkpoint);
    - with `steps_per_execution=k`, a redraw due inside a group of `k`
      steps happens at its end (the callback runs between groups): choose
      an `interval` that is a multiple of `k` for redraws at exact steps.

    `evaluate`, `predict` and exported models never redraw. The steps
    are counted on the host from one read of `iterations` per epoch: steps
    with no redraw due cost no extra work on the device. A redraw samples
    the matrices with NumPy on the host and assigns them.

    Args:
        interval: int. Training steps between redraws. Defaults to `1000`.
        until: int or `None`. The step after which no redraw is made (`0`:
            none at all): the last steps train on one draw (with a decaying
            learning rate, a late redraw leaves too few steps to adapt to
            it). Defaults to `None`: redraws all along.

    Attributes:
        redraws: int. Redraws this callback has made (each of all the
            layers at once), in every `fit` it served.

    Raises:
        ValueError: at the start of training, when the model has no
            Performer layer that may be redrawn.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((16, 8)),
    ...     keras_performer.PerformerEncoder(intermediate_dim=16, num_heads=2),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile("adam", "mse")
    >>> x, y = np.ones((8, 16, 8)), np.ones((8, 16, 1))
    >>> history = model.fit(x, y, batch_size=2, verbose=0, callbacks=[
    ...     keras_performer.callbacks.FeatureRedraw(interval=2)])

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """

    def __init__(self, interval=1000, until=None):
        super().__init__()
        check_positive_int("interval", interval)
        check_non_negative_int("until", until, allow_none=True)
        self.interval = interval
        self.until = until
        self.redraws = 0
        self._layers = []
        self._iterations = 0
        self._first_step = 0

    def on_train_begin(self, logs=None):
        self._layers = redrawable_layers(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        # Read once per epoch, after BackupAndRestore has restored it; the
        # steps in between are counted here.
        self._sync_state()
        self._iterations = int(
            ops.convert_to_numpy(self.model.optimizer.iterations)
        )
        draw = self._draw_at(self._iterations)
        for layer in self._layers:
            if int(ops.convert_to_numpy(layer.projection_draw)) != draw:
                layer.redraw_features(draw)

    def on_train_batch_begin(self, batch, logs=None):
        self._first_step = batch

    def on_train_batch_end(self, batch, logs=None):
        draw = self._draw_at(self._iterations)
        self._iterations += batch - self._first_step + 1
        new_draw = self._draw_at(self._iterations)
        if new_draw != draw:
            self._sync_state()
            for layer in self._layers:
                layer.redraw_features(new_draw)
            self.redraws += 1

    def _draw_at(self, step):
        """The draw number the layers hold after training step `step`."""
        if self.until is not None:
            step = min(step, self.until)
        return step // self.interval

    def _sync_state(self):
        # JAX's `fit` holds the variables' values apart from the variables
        # between steps; after a sync it reads them back, redraws included.
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()


def redraw_features(model, draw=None):
    """Redraws the projection of every Performer layer of a model.

    Args:
        model: a built `keras.Model` or layer. Its `PerformerAttention`
            layers, nested ones included, are redrawn, except those built
            with `redraw=False`.
        draw: int. The draw number for every layer (each layer draws from
            its own seed). Defaults to each layer's current draw plus one.

    Returns:
        The list of redrawn `PerformerAttention` layers.

    Raises:
        ValueError: when the model has no Performer layer that may be
            redrawn.
        RuntimeError: when called inside a compiled function.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((16, 8)),
    ...     keras_performer.PerformerAttention(num_heads=2, key_dim=4),
    ... ])
    >>> len(keras_performer.callbacks.redraw_features(model))
    1
    """
    layers = redrawable_layers(model)
    for layer in layers:
        layer.redraw_features(draw)
    return layers


def redrawable_layers(model):
    """The `PerformerAttention` layers of a model, nested ones included,
    whose features may be redrawn; raises `ValueError` when there is
    none."""
    # Keras has no public recursive listing of sublayers: this private
    # method is the one Keras itself uses.
    found = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, PerformerAttention)
    ]
    layers = [layer for layer in found if layer.redraw]
    if not layers:
        raise ValueError(
            "The model has no PerformerAttention layer whose features may be "
            f"redrawn (found {len(found)}, all built with redraw=False). "
            f"Received: model={model.name}"
        )
    unbuilt = [layer.name for layer in layers if not layer.built]
    if unbuilt:
        raise ValueError(
            "The model must be built (called once) before its features are "
            f"redrawn. Received: unbuilt Performer layers {unbuilt}"
        )
    return layers
