"""keras-hub encoder models with Performer blocks.

For each keras-hub backbone whose blocks are
`keras_hub.layers.TransformerEncoder` (BERT, RoBERTa, XLM-RoBERTa,
DistilBERT, ELECTRA, ALBERT), a subclass `Performer<Name>Backbone` whose
blocks are `PerformerEncoder`, with the Performer options in its config; and
for each keras-hub task on that backbone, a subclass `Performer<Name><Task>`
on the new backbone. They are registered when `keras_performer` is imported,
so that their presets load with `from_preset` (through the keras-hub base
classes too). `keras_performer.convert_to_performer` makes them from trained
models.
"""

import contextlib
import inspect
import sys

import keras
import keras_hub
from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder

from keras_performer.layers import performer_options as options_lib
from keras_performer.layers.performer_block import SEEDS_PER_BLOCK
from keras_performer.layers.performer_encoder import PerformerEncoder
from keras_performer.ops.projection import concrete_seed

# Source class: its Performer subclass (backbones and tasks).
_PERFORMER_CLASSES = {}


def _defining_modules(cls):
    """The modules of the classes in `cls`'s MRO that define `__init__`,
    within keras-hub: where its blocks are made."""
    return [
        sys.modules[base.__module__]
        for base in cls.__mro__
        if "__init__" in vars(base) and base.__module__.startswith("keras_hub")
    ]


def _builds_encoder_blocks(cls):
    """Whether a keras-hub backbone's blocks are keras-hub's
    `TransformerEncoder` and nothing else (no decoder blocks)."""
    namespaces = [vars(module) for module in _defining_modules(cls)]
    return any(
        namespace.get("TransformerEncoder") is TransformerEncoder
        for namespace in namespaces
    ) and not any("TransformerDecoder" in namespace for namespace in namespaces)


@contextlib.contextmanager
def _performer_blocks(cls, options):
    """Within this context, the `TransformerEncoder` that `cls`'s
    constructor makes is a `PerformerEncoder` with `options`, block `i`
    seeded `seed + SEEDS_PER_BLOCK * i`."""
    count = [0]

    def performer_encoder(**kwargs):
        seed = options["seed"] + SEEDS_PER_BLOCK * count[0]
        count[0] += 1
        return PerformerEncoder(**kwargs, **{**options, "seed": seed})

    with contextlib.ExitStack() as stack:
        for module in _defining_modules(cls):
            if "TransformerEncoder" in vars(module):
                stack.enter_context(
                    _replaced(module, "TransformerEncoder", performer_encoder)
                )
        yield


@contextlib.contextmanager
def _replaced(module, name, value):
    """`module.name` is `value` within this context."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


class _PerformerBackboneMixin:
    """Makes a keras-hub encoder backbone with `PerformerEncoder` blocks;
    takes and keeps the Performer options."""

    def __init__(self, *args, **kwargs):
        options = options_lib.pop_performer_options(kwargs)
        options["seed"] = concrete_seed(options["seed"])
        source = self.source_backbone_cls
        with _performer_blocks(source, options):
            super().__init__(*args, **kwargs)
        options_lib.set_performer_options(self, options)

    def get_config(self):
        return {**super().get_config(), **options_lib.performer_options(self)}


def _make_class(source, bases, attributes, doc):
    """Creates and registers the Performer class of `source`."""
    cls = type("Performer" + source.__name__, bases, attributes)
    cls.__module__ = __name__
    cls.__doc__ = doc
    keras.saving.register_keras_serializable(package="keras_performer")(cls)
    _PERFORMER_CLASSES[source] = cls
    globals()[cls.__name__] = cls
    return cls


def _register_all():
    classes = [
        cls for cls in vars(keras_hub.models).values() if inspect.isclass(cls)
    ]
    backbones = {}
    for source in classes:
        if issubclass(source, keras_hub.models.Backbone) and (
            _builds_encoder_blocks(source)
        ):
            backbones[source] = _make_class(
                source,
                (_PerformerBackboneMixin, source),
                {"source_backbone_cls": source},
                f"`keras_hub.models.{source.__name__}` whose blocks are "
                "`keras_performer.PerformerEncoder` (made by "
                "`keras_performer.convert_to_performer`).",
            )
    for source in classes:
        if (
            issubclass(source, keras_hub.models.Task)
            and getattr(source, "backbone_cls", None) in backbones
        ):
            _make_class(
                source,
                (source,),
                {"backbone_cls": backbones[source.backbone_cls]},
                f"`keras_hub.models.{source.__name__}` on a Performer "
                "backbone (made by `keras_performer.convert_to_performer`).",
            )


def performer_class(source_cls):
    """The Performer class of a keras-hub encoder backbone or task class,
    or `None` when there is none."""
    return _PERFORMER_CLASSES.get(source_cls)


_register_all()
