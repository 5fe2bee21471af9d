"""FeatureRedraw and redraw_features: cadence, determinism, inference,
checkpoints, interrupted training and XLA. (The strategies: in
tests/tools/test_train_distributed.py, in fresh processes.)"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_performer
from keras_performer import PerformerAttention
from keras_performer import PerformerEncoder
from keras_performer.callbacks import FeatureRedraw
from keras_performer.callbacks import redraw_features
from keras_performer.callbacks.feature_redraw import redrawable_layers
from keras_performer.layers.mha_compatibility import RANDOM_FEATURE_WEIGHTS
from keras_performer.ops import sample_projection_matrix
from tests.helpers import needs_xla


def encoder_model(seed=0, redraw=True):
    model = keras.Sequential(
        [
            keras.Input((16, 8)),
            PerformerEncoder(
                16, 2, num_random_features=8, seed=seed, redraw=redraw
            ),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def data(size=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(size, 16, 8)).astype("float32")
    return x, x.mean(axis=(1, 2))[:, None] * 4


def expected_projection(layer, draw):
    return sample_projection_matrix(
        layer.num_random_features, layer.key_dim, seed=layer.seed, draw=draw
    )


def sync_state(model):
    """JAX's `fit` and `evaluate` hold the variables' values apart between
    steps: a callback that reads them syncs them first."""
    if keras.backend.backend() == "jax":
        model.jax_state_sync()


def draw_of(layer):
    return int(keras.ops.convert_to_numpy(layer.projection_draw))


class DrawRecorder(keras.callbacks.Callback):
    """Records, after each training call, the optimizer's step count and
    each Performer layer's draw number and projection."""

    def __init__(self):
        super().__init__()
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        sync_state(self.model)
        self.records.append(
            (
                int(
                    keras.ops.convert_to_numpy(self.model.optimizer.iterations)
                ),
                [
                    (draw_of(layer), np.array(layer.projection_matrix))
                    for layer in redrawable_layers(self.model)
                ],
            )
        )


@pytest.mark.parametrize(
    "steps_per_execution",
    [1, 2] if keras.backend.backend() != "torch" else [1],  # torch: 1 only
)
def test_draw_number_follows_the_optimizer_iterations(steps_per_execution):
    x, y = data()
    model = encoder_model()
    model.compile("adam", "mse", steps_per_execution=steps_per_execution)
    recorder = DrawRecorder()
    callbacks = [FeatureRedraw(interval=3), recorder]
    model.fit(x, y, batch_size=4, epochs=2, callbacks=callbacks, verbose=0)
    # A second fit goes on counting from the optimizer's iterations.
    model.fit(x, y, batch_size=4, epochs=1, callbacks=callbacks, verbose=0)
    (layer,) = redrawable_layers(model)
    iterations = [iterations for iterations, _ in recorder.records]
    assert iterations == list(
        range(steps_per_execution, 24 + 1, steps_per_execution)
    )
    for iterations, [(draw, projection)] in recorder.records:
        assert draw == iterations // 3
        np.testing.assert_array_equal(
            projection, expected_projection(layer, draw)
        )
    assert draw_of(layer) == 8
    assert callbacks[0].redraws == 8  # 24 steps, every 3


def test_no_redraw_after_until():
    x, y = data()
    model = encoder_model()
    recorder = DrawRecorder()
    redraw = FeatureRedraw(interval=3, until=7)
    model.fit(
        x, y, batch_size=4, epochs=2, callbacks=[redraw, recorder], verbose=0
    )
    draws = [draw for _, [(draw, _)] in recorder.records]
    # Steps 1 to 16: redraws after steps 3 and 6, none after step 7.
    assert draws == [min(step, 7) // 3 for step in range(1, 17)]
    assert redraw.redraws == 2


def test_no_redraw_in_validation_evaluate_or_predict():
    x, y = data()
    model = encoder_model()
    (layer,) = redrawable_layers(model)
    seen_in_validation = []

    class ValidationRecorder(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            sync_state(self.model)
            seen_in_validation.append(draw_of(layer))

    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        validation_data=(x, y),
        callbacks=[FeatureRedraw(interval=1), ValidationRecorder()],
        verbose=0,
    )
    # 8 steps per epoch: validation after epoch 1 sees draw 8, never more.
    assert seen_in_validation == [8] * 8 + [16] * 8
    projection = np.array(layer.projection_matrix)
    redraw = FeatureRedraw(interval=1)
    model.evaluate(x, y, callbacks=[redraw], verbose=0)
    model.predict(x, callbacks=[redraw], verbose=0)
    assert draw_of(layer) == 16
    np.testing.assert_array_equal(layer.projection_matrix, projection)


def test_redraw_features_by_hand():
    layer = PerformerAttention(num_heads=2, key_dim=4, seed=5)
    layer(np.ones((1, 3, 8), "float32"))
    first = np.array(layer.projection_matrix)
    np.testing.assert_array_equal(first, expected_projection(layer, 0))
    assert layer.redraw_features() == 1
    second = np.array(layer.projection_matrix)
    np.testing.assert_array_equal(second, expected_projection(layer, 1))
    assert np.abs(second - first).max() > 0.1
    assert layer.redraw_features(0) == 0
    np.testing.assert_array_equal(layer.projection_matrix, first)


def test_redraw_features_of_a_model_reaches_nested_layers():
    inner = keras.Sequential(
        [keras.Input((16, 8)), PerformerAttention(2, 4, seed=1)]
    )
    frozen = PerformerEncoder(16, 2, seed=2, redraw=False)
    model = keras.Sequential(
        [keras.Input((16, 8)), inner, PerformerEncoder(16, 2, seed=3), frozen]
    )
    frozen_projection = np.array(frozen._self_attention_layer.projection_matrix)
    layers = redraw_features(model, draw=4)
    assert len(layers) == 2
    for layer in layers:
        assert draw_of(layer) == 4
        np.testing.assert_array_equal(
            layer.projection_matrix, expected_projection(layer, 4)
        )
    np.testing.assert_array_equal(
        frozen._self_attention_layer.projection_matrix, frozen_projection
    )
    with pytest.raises(ValueError, match="frozen"):
        frozen._self_attention_layer.redraw_features()


def test_a_draw_depends_only_on_seed_and_draw_number():
    x = np.ones((1, 3, 8), "float32")
    a, b, c = (PerformerAttention(2, 4, seed=s) for s in (7, 7, 8))
    for layer in (a, b, c):
        layer(x)
        layer.redraw_features(3)
    np.testing.assert_array_equal(a.projection_matrix, b.projection_matrix)
    assert np.abs(np.array(a.projection_matrix - c.projection_matrix)).max()


def test_a_layer_without_seed_keeps_the_one_it_picks():
    layer = PerformerAttention(2, 4)
    assert isinstance(layer.seed, int)
    restored = PerformerAttention.from_config(layer.get_config())
    x = np.ones((1, 3, 8), "float32")
    for each in (layer, restored):
        each(x)
        each.redraw_features(2)
    np.testing.assert_array_equal(
        layer.projection_matrix, restored.projection_matrix
    )
    encoder = PerformerEncoder(16, 2)
    assert encoder.get_config()["seed"] == encoder.seed
    backbone = keras_performer.PerformerBackbone(8, 1, 2, 8, 16, 8)
    assert backbone.get_config()["seed"] == backbone.seed


def test_bad_input():
    for interval in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="interval"):
            FeatureRedraw(interval=interval)
    for until in (-1, 1.5, True):
        with pytest.raises(ValueError, match="until"):
            FeatureRedraw(interval=1, until=until)
    with pytest.raises(ValueError, match="redraw"):
        PerformerAttention(2, 4, redraw="yes")
    with pytest.raises(ValueError, match="seed"):
        PerformerAttention(2, 4, seed=-1)
    layer = PerformerAttention(2, 4, seed=0)
    with pytest.raises(ValueError, match="built"):
        layer.redraw_features()
    layer(np.ones((1, 3, 8), "float32"))
    with pytest.raises(ValueError, match="draw"):
        layer.redraw_features(-1)
    x, y = data(8)
    dense = keras.Sequential([keras.Input((16, 8)), keras.layers.Dense(1)])
    dense.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no PerformerAttention"):
        dense.fit(x, y, callbacks=[FeatureRedraw(1)], verbose=0)
    frozen = encoder_model(redraw=False)
    with pytest.raises(ValueError, match="redraw=False"):
        frozen.fit(x, y, callbacks=[FeatureRedraw(1)], verbose=0)


def trained_with_redraws(seed=None):
    x, y = data()
    model = encoder_model(seed=seed)
    model.fit(
        x, y, batch_size=8, epochs=2, callbacks=[FeatureRedraw(3)], verbose=0
    )
    return model


def assert_same_features(model, other):
    for layer, other_layer in zip(
        redrawable_layers(model), redrawable_layers(other), strict=True
    ):
        for name in RANDOM_FEATURE_WEIGHTS:
            np.testing.assert_array_equal(
                getattr(layer, name), getattr(other_layer, name)
            )
        # Later draws agree too.
        layer.redraw_features()
        other_layer.redraw_features()
        np.testing.assert_array_equal(
            layer.projection_matrix, other_layer.projection_matrix
        )


def test_keras_file_keeps_projection_seed_and_draw(tmp_path):
    model = trained_with_redraws()
    assert draw_of(redrawable_layers(model)[0]) == 2
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    assert_same_features(model, keras.saving.load_model(path))


@pytest.mark.tensorflow
def test_no_redraw_in_a_compiled_function():
    layer = PerformerAttention(2, 4, seed=0)
    layer(np.ones((1, 3, 8), "float32"))

    @tf.function
    def redraw_in_graph():
        layer.redraw_features()

    with pytest.raises(RuntimeError, match="compiled function"):
        redraw_in_graph()


@pytest.mark.tensorflow
def test_tensorflow_checkpoints_keep_projection_seed_and_draw(tmp_path):
    model = trained_with_redraws()
    checkpoint = tf.train.Checkpoint(model=model)
    path = checkpoint.save(os.path.join(tmp_path, "ckpt"))
    # Rebuilt from the same code, it picks another seed: the checkpoint's
    # must win.
    restored = encoder_model(seed=None)
    assert restored.layers[0].seed != model.layers[0].seed
    tf.train.Checkpoint(model=restored).restore(path).expect_partial()
    assert_same_features(model, restored)


def test_weight_files_keep_projection_seed_and_draw(tmp_path):
    model = trained_with_redraws()
    x, y = data()
    model_checkpoint = keras.callbacks.ModelCheckpoint(
        os.path.join(tmp_path, "best.weights.h5"), save_weights_only=True
    )
    model.fit(x, y, callbacks=[FeatureRedraw(3), model_checkpoint], verbose=0)
    reloaded = encoder_model(seed=None)
    reloaded.load_weights(os.path.join(tmp_path, "best.weights.h5"))
    assert_same_features(model, reloaded)


def test_interrupted_and_resumed_training_matches_uninterrupted(tmp_path):
    x, y = data()

    def fit(model, *callbacks):
        return model.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            shuffle=False,
            callbacks=[FeatureRedraw(3), *callbacks],
            verbose=0,
        )

    class Interruption(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 2:
                raise RuntimeError("interrupted")

    model = encoder_model(seed=None)
    initial = os.path.join(tmp_path, "initial.weights.h5")
    model.save_weights(initial)
    backup = keras.callbacks.BackupAndRestore(os.path.join(tmp_path, "b"))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(model, backup, Interruption())
    # A new process builds the model again (with another seed) and resumes.
    resumed = encoder_model(seed=None)
    resumed_losses = fit(resumed, backup).history["loss"]

    uninterrupted = encoder_model(seed=None)
    uninterrupted.load_weights(initial)
    losses = fit(uninterrupted).history["loss"]
    assert len(resumed_losses) == 2
    np.testing.assert_allclose(resumed_losses, losses[1:], rtol=1e-6)
    for weight, other in zip(
        resumed.weights, uninterrupted.weights, strict=True
    ):
        np.testing.assert_allclose(weight, other, rtol=1e-6, atol=1e-7)
    assert_same_features(resumed, uninterrupted)


@needs_xla
@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="every JAX fit is XLA-compiled (the other redraw tests); the "
    "uncompiled half of this comparison runs op by op there (45 s)",
)
def test_xla_compiled_training_with_redraws():
    tokens = np.random.default_rng(0).integers(0, 16, (16, 33)).astype("int32")
    initial_weights, runs = None, []
    for jit_compile in (True, False):
        lm = keras_performer.PerformerCausalLM(
            keras_performer.PerformerBackbone(
                16, 1, 2, 16, 32, 32, num_random_features=8, seed=0
            )
        )
        initial_weights = initial_weights or lm.get_weights()
        lm.set_weights(initial_weights)
        lm.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        recorder = DrawRecorder()
        history = lm.fit(
            {
                "token_ids": tokens[:, :-1],
                "padding_mask": np.ones((16, 32), "int32"),
            },
            tokens[:, 1:],
            batch_size=4,
            epochs=1,
            shuffle=False,
            callbacks=[FeatureRedraw(3), recorder],
            verbose=0,
        )
        runs.append((history.history["loss"], recorder.records))
    (xla_losses, xla_records), (losses, records) = runs
    np.testing.assert_allclose(xla_losses, losses, rtol=1e-4)
    # Four steps: the features are redrawn after the third.
    assert [iterations for iterations, _ in xla_records] == list(range(1, 5))
    for (iterations, xla_layers), (_, layers) in zip(
        xla_records, records, strict=True
    ):
        for (draw, projection), (other_draw, other) in zip(
            xla_layers, layers, strict=True
        ):
            assert draw == other_draw == iterations // 3
            np.testing.assert_array_equal(projection, other)
