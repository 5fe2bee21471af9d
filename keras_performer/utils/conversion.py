"""`convert_to_performer`: a trained Transformer with FAVOR+ attention."""

import itertools

import keras
import keras_hub

from keras_performer.layers import performer_options as options_lib
from keras_performer.layers.performer_block import SEEDS_PER_BLOCK
from keras_performer.models import converted_models
from keras_performer.models.performer_backbone import PerformerBackbone
from keras_performer.models.performer_causal_lm import PerformerCausalLM
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.projection import concrete_seed
from keras_performer.utils.weight_transfer import PERFORMER_COUNTERPARTS
from keras_performer.utils.weight_transfer import transfer_layer_weights


def convert_to_performer(model, max_sequence_length=None, **performer_options):
    """Returns a copy of a trained Transformer with Performer attention.

    Every weight is copied; the random features are drawn from `seed`. This
    is the paper's backward compatibility (Sec. 4.2): the converted model
    approximates the original, and a short fine-tuning brings it back to
    its accuracy, now in time and memory linear in the sequence length.
    The original model is left unchanged (a task's preprocessor, which has
    no weights, is shared).

    It takes:

    - `keras_hub.models.GPT2Backbone`, which becomes a
      `keras_performer.PerformerBackbone`, and `GPT2CausalLM`, which
      becomes a `keras_performer.PerformerCausalLM` with GPT-2's
      preprocessor: `generate` keeps taking strings and decodes with a
      cache of constant size.
    - The keras-hub backbones whose blocks are
      `keras_hub.layers.TransformerEncoder` (`BertBackbone`,
      `RobertaBackbone`, `XLMRobertaBackbone`, `DistilBertBackbone`,
      `ElectraBackbone`, `AlbertBackbone`) and their tasks (e.g.
      `BertTextClassifier`, `BertMaskedLM`): each becomes its subclass
      `Performer<Name>` (e.g. `PerformerBertTextClassifier`), whose blocks
      are `keras_performer.PerformerEncoder`, with the same preprocessor.
    - A `keras.Sequential` or Functional model (nested ones too) with
      `keras.layers.MultiHeadAttention`, `keras_hub.layers.
      TransformerEncoder` or `TransformerDecoder` layers: the same model
      with `PerformerAttention`, `PerformerEncoder` or `PerformerDecoder`.
      A subclassed model too, when it can be made again from its config
      and holds those layers as attributes (or in lists): it is made
      again, the layers replaced, and built on the original's input
      shape.

    Converted models save and load like any Keras or keras-hub model
    (`save_to_preset` and `from_preset` for keras-hub ones).

    Args:
        model: a built model, as above.
        max_sequence_length: int. For the keras-hub models: the length of
            the converted model's learned position embeddings, whose rows
            repeat the original's (position `i` starts from the trained
            position `i mod L`, `L` the original's number of positions:
            the initialization of Beltagy et al., 2020), and the sequence
            length of its preprocessor (a copy). Defaults to `None` (the
            original's).
        **performer_options: the Performer options of
            `keras_performer.PerformerAttention` (`num_random_features`,
            `feature_map`, `seed`, ...); the `i`-th attention layer or
            block of the model is seeded `seed + 2 * i`. Not
            `rotary_max_wavelength`: the converted model keeps the
            original's positions.

    Returns:
        The converted model, built, with the original's weights.

    Raises:
        ValueError: for an unbuilt model, unknown options, a
            model that already has Performer attention, or one whose
            attention cannot be converted (grouped-query attention, as in
            Llama or Gemma, or any other attention class): the message
            names the first such layer and its class.

    Example:

    >>> inputs = keras.Input((16, 8))
    >>> outputs = keras.layers.MultiHeadAttention(2, 4)(inputs, inputs)
    >>> exact = keras.Model(inputs, outputs)
    >>> performer = keras_performer.convert_to_performer(
    ...     exact, num_random_features=64, seed=1
    ... )
    >>> type(performer.layers[1]).__name__
    'PerformerAttention'

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
        - [Beltagy et al., 2020](https://arxiv.org/abs/2004.05150)
    """
    options = _checked_options(performer_options)
    if not isinstance(model, keras.Model):
        raise ValueError(
            "`convert_to_performer` takes a model. Received: "
            f"{model!r} ({type(model).__name__})"
        )
    if not model.built:
        raise ValueError(
            "`model` must be built (called once, or made with an `Input`) "
            f"before it can be converted. Received: {model.name} (not built)"
        )
    hub_converter = _hub_converter(model)
    _check_convertible(model, hub_converter)
    if max_sequence_length is not None:
        check_positive_int("max_sequence_length", max_sequence_length)
        if hub_converter is None:
            raise ValueError(
                "`max_sequence_length` applies to keras-hub models, whose "
                "position embeddings it lengthens. Received: "
                f"max_sequence_length={max_sequence_length} for {model.name} "
                f"({type(model).__name__})"
            )
    if hub_converter is not None:
        converted = hub_converter(model, options, max_sequence_length)
    else:
        converted = _convert_keras_model(model, options)
    _check_replaced(converted)
    _copy_weights(model, converted)
    return converted


def _checked_options(performer_options):
    remaining = dict(performer_options)
    options = options_lib.pop_performer_options(remaining)
    if remaining:
        raise ValueError(
            "Unrecognized arguments (not Performer options): "
            f"{sorted(remaining)}. The options are: "
            f"{list(options_lib.DEFAULTS)}"
        )
    if options["rotary_max_wavelength"] is not None:
        raise ValueError(
            "A converted model keeps the positions it was trained with: "
            "`rotary_max_wavelength` would change what its attention "
            "computes. Received: rotary_max_wavelength="
            f"{options['rotary_max_wavelength']}"
        )
    options["seed"] = concrete_seed(options["seed"])
    return options


def _is_graph_model(model):
    """Whether `model` is a Sequential or Functional model, whose layers a
    clone can replace."""
    return isinstance(model, keras.Sequential) or type(model).__name__ == (
        "Functional"
    )


def _is_performer(layer):
    return type(layer).__module__.startswith("keras_performer")


def _is_attention(layer):
    return isinstance(layer, keras.layers.MultiHeadAttention) or (
        "attention" in type(layer).__name__.lower()
    )


def _check_convertible(model, hub_converter):
    """Raises `ValueError` naming the first attention layer that would stay
    exact, or when the model has no attention to convert; `hub_converter`
    is `_hub_converter(model)`."""
    if _is_performer(model):
        raise ValueError(
            "The model already has Performer attention. Received: "
            f"{model.name} ({type(model).__name__})"
        )
    found = []

    def visit(layer, path):
        if _is_performer(layer):
            raise ValueError(
                f"Layer {path} already has Performer attention. Received: "
                f"{type(layer).__name__} in {model.name}"
            )
        convertible = type(layer) in PERFORMER_COUNTERPARTS
        if _is_attention(layer) and not convertible:
            supported = (
                "the keras-hub models listed in `convert_to_performer`'s "
                "documentation"
                if hub_converter is None and _is_hub_model(model)
                else "`keras.layers.MultiHeadAttention` and keras-hub's "
                "`TransformerEncoder`, `TransformerDecoder` and "
                "`CachedMultiHeadAttention`"
            )
            raise ValueError(
                f"Cannot convert layer {path} ({type(layer).__name__}): "
                f"this attention has no Performer counterpart here. "
                f"Convertible: {supported}. Received: {model.name} "
                f"({type(model).__name__})"
            )
        if convertible:
            found.append(path)
            return
        for child in layer._flatten_layers(include_self=False, recursive=False):
            visit(child, f"{path}/{child.name}")

    visit(model, model.name)
    if _is_hub_model(model) and hub_converter is None:
        raise ValueError(
            f"Cannot convert {type(model).__name__}: it is not among the "
            "keras-hub models listed in `convert_to_performer`'s "
            f"documentation. Received: {model.name}"
        )
    if not found:
        raise ValueError(
            "The model has no attention layer to convert. Received: "
            f"{model.name} ({type(model).__name__})"
        )


def _check_replaced(converted):
    """Raises `ValueError` naming an exact attention layer that stayed in
    the converted model (one inside a layer of the user's own class)."""

    def visit(layer, path, parent):
        if type(layer) in PERFORMER_COUNTERPARTS:
            raise ValueError(
                f"Cannot convert layer {path} ({type(layer).__name__}): it "
                f"is inside {parent.name} ({type(parent).__name__}), whose "
                "layers a conversion cannot replace (only those of models, "
                "and the public attributes of subclassed models). Received: "
                f"{converted.name}"
            )
        for child in layer._flatten_layers(include_self=False, recursive=False):
            if not _is_performer(child):
                visit(child, f"{path}/{child.name}", layer)

    visit(converted, converted.name, converted)


def _is_hub_model(model):
    return isinstance(model, (keras_hub.models.Backbone, keras_hub.models.Task))


def _hub_converter(model):
    """The function that converts a keras-hub model, or `None`."""
    if type(model) is keras_hub.models.GPT2Backbone:
        return _gpt2_backbone
    if type(model) is keras_hub.models.GPT2CausalLM:
        return _gpt2_causal_lm
    if converted_models.performer_class(type(model)) is not None:
        if isinstance(model, keras_hub.models.Task):
            return _encoder_task
        return _encoder_backbone
    return None


def _convert_keras_model(model, options):
    """A Sequential, Functional or subclassed model, converted."""
    seeds = itertools.count(options["seed"], SEEDS_PER_BLOCK)
    if _is_graph_model(model):
        return _clone(model, options, seeds)
    return _rebuilt(model, options, seeds)


def _clone(model, options, seeds):
    """A Sequential or Functional model's clone, its attention replaced."""

    def clone_layer(layer):
        if _is_graph_model(layer):
            return _clone(layer, options, seeds)
        performer = _performer_layer(layer, options, seeds)
        if performer is None:
            return type(layer).from_config(layer.get_config())
        return performer

    return keras.models.clone_model(model, clone_function=clone_layer)


def _performer_layer(layer, options, seeds):
    """The Performer layer that replaces `layer`, or `None`."""
    # These classes exactly: a subclass's call may differ.
    performer = PERFORMER_COUNTERPARTS.get(type(layer))
    if performer is None:
        return None
    config = layer.get_config()
    config.pop("seed", None)  # MultiHeadAttention's dropout seed.
    return performer.from_config({**config, **options, "seed": next(seeds)})


def _rebuilt(model, options, seeds):
    """A subclassed model made again from its config, its attention layers
    (attributes, or items of list attributes) replaced before it is built,
    then built on the original's input shape."""
    try:
        clone = type(model).from_config(model.get_config())
    except (NotImplementedError, TypeError) as error:
        raise ValueError(
            "A subclassed model is converted by making it again from its "
            "config (`get_config` and `from_config`), which failed: "
            f"{error}. Received: {model.name} ({type(model).__name__})"
        ) from error
    _replace_attributes(clone, options, seeds)
    build_config = model.get_build_config()
    if build_config is None:
        raise ValueError(
            "A subclassed model must have been called (or built with an "
            f"input shape) to be converted. Received: {model.name}"
        )
    clone.build_from_config(build_config)
    return clone


def _public_attributes(layer):
    """A layer's public attributes holding layers or lists of them, in the
    order the layer tracked them (its constructor's). On PyTorch, sublayers
    live in the module's `_modules`, not in the instance dict."""
    positions = {id(sublayer): i for i, sublayer in enumerate(layer._layers)}
    found = []
    # Names starting with "_" are Keras's own, as the tracked layers.
    for name in {**vars(layer), **getattr(layer, "_modules", {})}:
        if name.startswith("_"):
            continue
        value = getattr(layer, name)
        first = value[0] if isinstance(value, list) and value else value
        if id(first) in positions:
            found.append((positions[id(first)], name, value))
    return {name: value for _, name, value in sorted(found)}


def _set_attribute(layer, name, value):
    modules = getattr(layer, "_modules", None)
    if modules is not None and name in modules:
        modules[name] = value
    else:
        object.__setattr__(layer, name, value)


def _replace_attributes(layer, options, seeds):
    for name, value in _public_attributes(layer).items():
        if isinstance(value, list):
            for i, item in enumerate(value):
                performer = _performer_layer(item, options, seeds)
                if performer is not None:
                    layer._tracker.replace_tracked_value(
                        "layers", item, performer
                    )
                    list.__setitem__(value, i, performer)
            continue
        performer = _performer_layer(value, options, seeds)
        if performer is not None:
            # In the tracked layers, in the same place: the weights keep
            # their order.
            layer._tracker.replace_tracked_value("layers", value, performer)
            _set_attribute(layer, name, performer)
    for child in layer._flatten_layers(include_self=False, recursive=False):
        if not _is_performer(child):
            _replace_attributes(child, options, seeds)


def _gpt2_backbone(backbone, options, max_sequence_length):
    block = backbone.transformer_layers[0]
    return PerformerBackbone(
        vocabulary_size=backbone.vocabulary_size,
        num_layers=backbone.num_layers,
        num_heads=backbone.num_heads,
        hidden_dim=backbone.hidden_dim,
        intermediate_dim=backbone.intermediate_dim,
        max_sequence_length=max_sequence_length or backbone.max_sequence_length,
        causal=True,
        dropout=backbone.dropout,
        activation=keras.activations.serialize(block.activation),
        layer_norm_epsilon=block.layer_norm_epsilon,
        **options,
        dtype=backbone.dtype_policy,
        name=backbone.name,
    )


def _gpt2_causal_lm(causal_lm, options, max_sequence_length):
    return PerformerCausalLM(
        backbone=_gpt2_backbone(
            causal_lm.backbone, options, max_sequence_length
        ),
        preprocessor=_preprocessor(causal_lm.preprocessor, max_sequence_length),
        name=causal_lm.name,
    )


def _encoder_backbone(backbone, options, max_sequence_length):
    config = {**backbone.get_config(), **options}
    if max_sequence_length is not None:
        config["max_sequence_length"] = max_sequence_length
    cls = converted_models.performer_class(type(backbone))
    return cls.from_config(config)


def _encoder_task(task, options, max_sequence_length):
    config = task.get_config()
    config["backbone"] = _encoder_backbone(
        task.backbone, options, max_sequence_length
    )
    config["preprocessor"] = _preprocessor(
        task.preprocessor, max_sequence_length
    )
    return converted_models.performer_class(type(task)).from_config(config)


def _preprocessor(preprocessor, sequence_length):
    """The task's preprocessor, or a copy of it (same tokenizer) with
    another `sequence_length`."""
    if preprocessor is None or sequence_length is None:
        return preprocessor
    config = preprocessor.get_config()
    config["tokenizer"] = preprocessor.tokenizer
    config["sequence_length"] = sequence_length
    return type(preprocessor).from_config(config)


def _copy_weights(source, target):
    """Copies `source`'s weights into `target`, pairing the layers of
    models by name."""
    if isinstance(source, keras_hub.layers.PositionEmbedding):
        _copy_positions(source, target)
        return
    if not isinstance(source, keras.Model):
        transfer_layer_weights(source, target)
        return
    if not (_is_graph_model(source) or _is_hub_model(source)):
        # A subclassed model made again: its layers in the same order.
        for pair in zip(source.layers, target.layers, strict=True):
            _copy_weights(*pair)
        return
    targets = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        if not layer.weights:
            continue
        if layer.name not in targets:
            raise ValueError(
                f"Layer {layer.name} of {source.name} has no counterpart in "
                f"the converted model. Received: layers {sorted(targets)}"
            )
        _copy_weights(layer, targets[layer.name])


def _copy_positions(source, target):
    """Position embeddings, their rows repeated to the target's length."""
    (source_weight,) = source.weights
    (target_weight,) = target.weights
    length = target_weight.shape[0]
    rows = keras.ops.arange(length) % source_weight.shape[0]
    target_weight.assign(keras.ops.take(source_weight, rows, axis=0))
