"""`strip`: every technique's training-time wrappers undone, in one call."""

import keras

from tfcompress.core.clone import copy_layer
from tfcompress.core.graph import find, is_graph_model, map_layers
from tfcompress.core.wrapper import InsertedLayer, WeightWrapper


def strip(model):
    """Returns `model` with every technique's training-time wrappers undone.

    Each `WeightWrapper` whose technique strips (pruning, clustering, ...)
    becomes a plain copy of its layer with the transform baked into the
    weights (a pruned kernel holds its zeros), so the outputs are the same
    and no tfcompress class remains there. Wrappers that export needs as they
    are (quantization-aware layers: their ranges are the int8 scales) are
    kept, around the baked layer. A model with nothing to strip comes back
    unchanged (the same object); a single wrapper returns its stripped layer.
    The original model is not changed.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    pruned = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    plain = tfc.strip(pruned)
    assert not tfc.core.find(plain, tfc.core.WeightWrapper)
    ```
    """
    if isinstance(model, WeightWrapper):
        return model.strip()
    if not isinstance(model, keras.Model):
        raise ValueError(f"strip takes a keras Model or a tfcompress wrapper layer; got "
                         f"{type(model).__name__}.")
    if not needs_strip(model):
        return model
    if not is_graph_model(model):
        raise ValueError(
            f"{type(model).__name__} is a subclassed model holding tfcompress wrappers; "
            "strip each wrapper with tfcompress.strip(layer) in your model's code, or "
            "build the model as functional/Sequential.")
    return map_layers(model, lambda layer: layer.strip() if isinstance(layer, WeightWrapper)
                      else copy_layer(layer))


def needs_strip(model):
    """True when `model` holds a wrapper that `strip` would change."""
    return any(not w.kept_by_strip for w in find(model, WeightWrapper))


def added_variables(model):
    """The variables techniques added to `model` (masks, ranges, step counters), by id.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    from tfcompress.core.strip import added_variables
    pruned = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    assert len(added_variables(pruned)) == 3   # the kernel's mask, the step, its offset
    ```
    """
    added = set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, WeightWrapper):
            added.update(id(v) for v in layer.own_variables())
        elif isinstance(layer, InsertedLayer):
            added.update(id(v) for v in layer.weights)
    return added


def stripped_values(model):
    """`{id(variable): value}`: what `strip` writes into the weights that wrappers transform."""
    wrappers = find(model, WeightWrapper)
    inner = {id(w) for outer in wrappers for w in outer.chain()[1:]}
    values = {}
    for wrapper in wrappers:
        if id(wrapper) not in inner:  # each chain once, from its outermost wrapper
            values.update((key, value) for key, (_, value) in wrapper.substitutions(
                False, keep=lambda w: not w.kept_by_strip).items())
    return values
