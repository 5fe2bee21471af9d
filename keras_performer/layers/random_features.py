"""The random features of a Performer layer: a projection drawn from a
seed, kept in non-trainable weights, redrawn on purpose only."""

import keras
from keras import ops

from keras_performer.ops.checks import check_non_negative_int
from keras_performer.ops.projection import sample_projection_matrix


class RandomFeatures:
    """Mixin of `PerformerAttention`: its random projection and redraws.

    The layer sets `seed`, `num_random_features`, `projection_coupling`,
    `projection_norm` and `redraw` (its Performer options) and calls
    `_build_random_features` in `build`.
    """

    def _build_random_features(self, dim):
        """Adds `projection_matrix` `(num_random_features, dim)`, drawn
        from the seed, and the seed and draw number it comes from."""
        self.projection_matrix = self.add_weight(
            name="projection_matrix",
            shape=(self.num_random_features, dim),
            initializer=self._sample_projection,
            dtype="float32",
            trainable=False,
            autocast=False,
        )
        # What the projection is drawn from, kept with it in checkpoints so
        # that a restored layer redraws as the saved one would have.
        self.projection_seed = self.add_weight(
            name="projection_seed",
            shape=(),
            initializer=keras.initializers.Constant(self.seed),
            dtype="int64",
            trainable=False,
        )
        self.projection_draw = self.add_weight(
            name="projection_draw",
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
        )

    def _sample_projection(self, shape, dtype=None, seed=None, draw=0):
        return sample_projection_matrix(
            shape[0],
            shape[1],
            seed=self.seed if seed is None else seed,
            projection_coupling=self.projection_coupling,
            projection_norm=self.projection_norm,
            draw=draw,
        )

    def redraw_features(self, draw=None):
        """Replaces the random projection by draw number `draw` of the
        layer's seed.

        A draw is a pure function of the seed and the draw number, so every
        replica and worker that redraws gets the same matrix with no
        communication, and a restored layer gets the matrix it had. The
        redraw runs eagerly, between training steps; inference never
        redraws.

        Args:
            draw: int. The draw number. Defaults to the current one plus
                one.

        Returns:
            The draw number now in use.

        Raises:
            ValueError: when the layer is not built, or frozen
                (`redraw=False`).
            RuntimeError: when called inside a compiled function (a
                `tf.function`, a training step), where a matrix drawn on
                the host would be frozen into the graph.
        """
        if not self.built:
            raise ValueError(
                "The layer must be built (called once) before its features "
                f"are redrawn. Received: layer {self.name}, not built"
            )
        if not self.redraw:
            raise ValueError(
                f"The features of layer {self.name} are frozen. Set "
                "`layer.redraw = True` to redraw them. Received: redraw=False"
            )
        try:
            seed = int(ops.convert_to_numpy(self.projection_seed))
            current = int(ops.convert_to_numpy(self.projection_draw))
        except (NotImplementedError, TypeError, ValueError) as error:
            raise RuntimeError(
                "`redraw_features` runs eagerly, between training steps (as "
                "the FeatureRedraw callback does): inside a compiled "
                "function a matrix drawn on the host would be frozen into "
                f"the graph. Received: a call inside a compiled function "
                f"for layer {self.name}"
            ) from error
        draw = current + 1 if draw is None else draw
        check_non_negative_int("draw", draw)
        self.projection_matrix.assign(
            self._sample_projection(
                self.projection_matrix.shape, seed=seed, draw=draw
            )
        )
        self.projection_draw.assign(draw)
        return draw
