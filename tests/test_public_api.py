"""The public surface: every public class from its subpackage and the top
level, and nothing private."""

import inspect

import keras

import keras_performer

SUBPACKAGES = ("callbacks", "layers", "models", "ops", "utils")


def public_names(module):
    return [name for name in module.__all__ if not name.startswith("_")]


def test_every_public_class_is_exported_from_the_top_level():
    for package in SUBPACKAGES:
        module = getattr(keras_performer, package)
        for name in public_names(module):
            value = getattr(module, name)
            if inspect.isclass(value):
                assert getattr(keras_performer, name) is value, name


def test_subpackages_export_the_classes_their_modules_define():
    for package in ("callbacks", "layers", "models"):
        module = getattr(keras_performer, package)
        defined = {
            cls.__name__
            for submodule in vars(module).values()
            if inspect.ismodule(submodule)
            for cls in vars(submodule).values()
            if inspect.isclass(cls)
            and cls.__module__ == submodule.__name__
            and issubclass(cls, (keras.layers.Layer, keras.callbacks.Callback))
        }
        # PerformerBlock is the blocks' shared base, not a layer to use;
        # the Performer subclasses of keras-hub's encoder models are made by
        # `convert_to_performer` (tests/utils/test_conversion.py), not
        # constructed by hand.
        defined -= {
            cls.__name__
            for cls in vars(keras_performer.models.converted_models).values()
            if inspect.isclass(cls)
            and cls.__module__.endswith("converted_models")
        }
        exported = {
            name
            for name in public_names(module)
            if inspect.isclass(getattr(module, name))
        }
        assert defined - {"PerformerBlock"} == exported


def test_all_names_resolve():
    for name in keras_performer.__all__:
        assert getattr(keras_performer, name) is not None
    for package in SUBPACKAGES:
        module = getattr(keras_performer, package)
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_layers_subpackage_has_the_attention_layer():
    layer = keras_performer.layers.PerformerAttention(num_heads=1, key_dim=2)
    assert isinstance(layer, keras_performer.PerformerAttention)
