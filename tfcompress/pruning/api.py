"""prepare → fit with callbacks → strip: the pruning entry points."""

import difflib
import warnings

import keras

from tfcompress.core import WeightWrapper, copy_layer, is_graph_model, map_layers, strip
from tfcompress.pruning import registry
from tfcompress.pruning.wrapper import PruneLowMagnitude

SUBCLASSED_ERROR = (
    "{name} is a subclassed model; its layers are created in Python code, so "
    "they cannot be rewrapped from outside without changing that code. Wrap "
    "the layers where the model creates them, e.g. in __init__: "
    "`self.dense = tfcompress.pruning.prune_low_magnitude(keras.layers.Dense(64), "
    "pruning_schedule=...)`, then train with UpdatePruningStep as usual."
)


#: Keyword arguments `prune_low_magnitude` takes besides its named parameters.
EXTRA_KWARGS = ("weight_names", "strict")
#: ... and, for a single layer, Keras's layer arguments for its wrapper.
LAYER_KWARGS = ("name", "trainable", "dtype", "autocast", "activity_regularizer",
                "input_shape", "input_dim")


def prune_low_magnitude(to_prune, pruning_schedule=None, block_size=(1, 1),
                        block_pooling_type="AVG", pruning_policy=None,
                        sparsity_m_by_n=None, allocation="uniform", criterion="magnitude",
                        **kwargs):
    """Wraps a layer, a list of layers, or a Sequential/functional model for pruning.

    TFMOT's function, for Keras 3. On a model, every layer with prunable
    weights (Dense, Conv, Embedding, RNN, attention, ... see
    `registry.PRUNABLE`) is wrapped in `PruneLowMagnitude`; weightless layers
    and normalization layers are kept as they are; nested models are pruned
    too; layers already wrapped are kept. Composite layers (keras-rs
    `FeatureCross`, keras-hub `TransformerEncoder`, a user's block) are
    searched however deep: every supported sublayer inside is pruned as at
    top level. Weights no rule covers (a layer's own `add_weight` variables,
    e.g. a position embedding) stay dense and are named in one warning;
    `strict=True` makes that an error. The returned model owns copies of
    the weights: the original model is not changed.

    Train the result with `UpdatePruningStep()` among the callbacks, then
    `strip_pruning` it before export.

    Args:
        to_prune: a `keras.layers.Layer`, a list of layers, or a Sequential or
            functional `keras.Model`.
        pruning_schedule: a `PruningSchedule` (default `ConstantSparsity(0.5, 0)`).
        block_size, block_pooling_type, sparsity_m_by_n: see `PruneLowMagnitude`.
        allocation: how the schedule's sparsity is shared out among the
            layers: `"uniform"` (TFMOT's: every weight to the same sparsity),
            `"global"` (one magnitude ranking over the whole model, each
            weight keeping at least `allocation.MIN_KEPT` of itself) or
            `"erk"` (Erdős–Rényi-kernel: small layers kept denser). Both reach
            the schedule's sparsity over the pruned weights.
        criterion: `"magnitude"`, or `"fisher"` (w² times the running mean
            of the weight's squared gradients, gathered inside `fit`).
        pruning_policy: a `PruningPolicy` that checks the model and picks the
            layers to wrap, e.g. `PruneForLatencyOnXNNPack()`. Models only.
        **kwargs: `weight_names=[...]`, passed to `PruneLowMagnitude`. On a
            model, `weight_names` may be a dict keyed by layer name or class
            name; an empty list leaves that layer unpruned, e.g.
            `weight_names={"click": []}`. A single layer also takes Keras's
            layer arguments for its wrapper (`name`, `trainable`, `dtype`,
            `input_shape`, ...). `strict=True` (models): weights that no rule
            covers are an error instead of a warning. Anything else is an
            error: a misspelt `pruning_shedule=` is never silently dropped.

    Example:

    ```python
    import keras
    import tfcompress as tfc

    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
                             keras.layers.Dense(2)])
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100)
    model = tfc.pruning.prune_low_magnitude(base, pruning_schedule=schedule)
    smarter = tfc.pruning.prune_low_magnitude(base, pruning_schedule=schedule,
                                              allocation="erk", criterion="fisher")
    ```
    """
    is_layer = (isinstance(to_prune, keras.layers.Layer)
                and not isinstance(to_prune, keras.Model))
    _check_kwargs(kwargs, is_layer)
    strict = bool(kwargs.pop("strict", False))
    params = dict(pruning_schedule=pruning_schedule, block_size=block_size,
                  block_pooling_type=block_pooling_type,
                  sparsity_m_by_n=sparsity_m_by_n, allocation=allocation,
                  criterion=criterion)
    if pruning_policy is not None:
        return _prune_with_policy(to_prune, pruning_policy, params, kwargs)
    if isinstance(to_prune, (list, tuple)):
        return [
            layer if isinstance(layer, PruneLowMagnitude)
            else PruneLowMagnitude(layer, **params, **kwargs)
            for layer in to_prune
        ]
    if isinstance(to_prune, keras.Model):
        if not is_graph_model(to_prune):
            raise ValueError(SUBCLASSED_ERROR.format(name=type(to_prune).__name__))
        left = []
        pruned = map_layers(to_prune, lambda layer: _wrap(layer, params, kwargs, left=left))
        _report_left_dense(left, strict)
        return pruned
    if isinstance(to_prune, keras.layers.Layer):
        if isinstance(to_prune, PruneLowMagnitude):
            raise ValueError(
                f"Layer '{to_prune.name}' is already wrapped by PruneLowMagnitude; "
                "prune_low_magnitude must be applied once per layer."
            )
        return PruneLowMagnitude(to_prune, **params, **kwargs)
    raise ValueError(
        "prune_low_magnitude takes a keras Layer, a list of layers, or a "
        f"Sequential/functional keras Model; got {type(to_prune).__name__}."
    )


def _check_kwargs(kwargs, is_layer):
    accepted = EXTRA_KWARGS + (LAYER_KWARGS if is_layer else ())
    unknown = sorted(k for k in kwargs if k not in accepted)
    if not unknown:
        return
    named = ["to_prune", "pruning_schedule", "block_size", "block_pooling_type",
             "pruning_policy", "sparsity_m_by_n", "allocation", "criterion"]
    hints = ""
    for key in unknown:
        close = difflib.get_close_matches(key, named + list(accepted), n=1)
        if close:
            hints += f" Did you mean {close[0]}= instead of {key}=?"
    where = "" if is_layer or not set(unknown) & set(LAYER_KWARGS) else (
        " (Keras layer arguments such as name apply to a single layer only)")
    raise TypeError(
        f"prune_low_magnitude got unknown keyword argument(s) {unknown}{where}. "
        f"It takes {', '.join(named[1:] + list(accepted))}.{hints}"
    )


def _prune_with_policy(to_prune, policy, params, kwargs):
    from tfcompress.pruning.policy import PruningPolicy

    if not isinstance(policy, PruningPolicy):
        raise ValueError(
            "pruning_policy must be a tfcompress.pruning.PruningPolicy, e.g. "
            f"PruneForLatencyOnXNNPack(); got {type(policy).__name__}."
        )
    if not (isinstance(to_prune, keras.Model) and is_graph_model(to_prune)):
        raise ValueError(
            f"pruning_policy={type(policy).__name__}() checks a whole model, but "
            f"prune_low_magnitude got {_kind_of(to_prune)}. Pass the Sequential or "
            "functional model itself, e.g. prune_low_magnitude(model, "
            "pruning_policy=...), or drop pruning_policy to wrap layers one by one."
        )
    policy.ensure_model_supports_pruning(to_prune)
    return map_layers(to_prune, lambda layer: _wrap(layer, params, kwargs, policy))


def _kind_of(value):
    if isinstance(value, (list, tuple)):
        return "a list of layers"
    if isinstance(value, keras.Model):
        return f"a subclassed model ({type(value).__name__})"
    if isinstance(value, keras.layers.Layer):
        return f"a single layer ('{value.name}')"
    return f"a {type(value).__name__}"


def _wrap(layer, params, kwargs, policy=None, left=None):
    if isinstance(layer, PruneLowMagnitude) or (
            isinstance(layer, WeightWrapper)
            and (type(layer.computing_layer()) is keras.layers.Embedding
                 or not registry.split(layer.computing_layer())[0])):
        # already pruned, a table another technique owns, or a layer another technique
        # wraps that no pruning rule covers (row-wise tables: QR, hashed, mixed-dim)
        return copy_layer(layer)
    if policy is not None and not policy.allow_pruning(layer):
        return copy_layer(layer)
    names = _weight_names_for(layer, kwargs)
    if names is not None and not list(names):
        return copy_layer(layer)  # asked to leave this layer dense
    if names is None:
        pruned, uncovered = registry.split(layer)
        if left is not None:
            left.extend((w.path, type(layer).__name__) for w in uncovered)
        if not pruned:
            return copy_layer(layer)  # weightless, normalization, or no rule anywhere
    return PruneLowMagnitude(copy_layer(layer), **params, weight_names=names)


def _report_left_dense(left, strict):
    """One line naming the weights no rule covers (an error with `strict=True`)."""
    if not left:
        return
    paths = sorted({f"{path} ({owner})" for path, owner in left})
    shown = ", ".join(paths[:12]) + (f" and {len(paths) - 12} more" if len(paths) > 12 else "")
    message = (
        f"prune_low_magnitude left {len(paths)} weight{'s' * (len(paths) != 1)} dense that "
        f"no pruning rule covers: {shown}. To prune them, name them with "
        "weight_names={'<layer name>': ['<weight name>']} or give the layer "
        "get_prunable_weights() (tfcompress.pruning.PrunableLayer)."
    )
    if strict:
        raise ValueError(message + " Supported layers, also inside composite ones: "
                         f"{', '.join(registry.SUPPORTED_NAMES)}. (strict=True makes this "
                         "an error; drop it to leave them dense.)")
    warnings.warn(message + " (strict=True makes this an error.)", UserWarning, stacklevel=3)


def _weight_names_for(layer, kwargs):
    """`weight_names` may be a list (all layers) or a dict keyed by layer name or class."""
    names = kwargs.get("weight_names")
    if isinstance(names, dict):
        return names.get(layer.name, names.get(type(layer).__name__))
    return names


def strip_pruning(model):
    """Returns a copy of `model` with pruning wrappers replaced by plain layers.

    TFMOT's name for `tfcompress.strip`: each wrapped layer becomes a plain
    copy of its inner layer whose weights are `weight * mask`, so the zeros
    are in the weights themselves, the outputs are identical, and no
    tfcompress class remains (the model loads and exports anywhere). A model
    with no wrappers comes back unchanged (the same object). A single
    `PruneLowMagnitude` layer returns its stripped inner layer.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    pruned = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    plain = tfc.pruning.strip_pruning(pruned)
    ```
    """
    if not isinstance(model, (keras.Model, PruneLowMagnitude)):
        raise ValueError(
            f"strip_pruning takes a keras Model or a PruneLowMagnitude layer; "
            f"got {type(model).__name__}."
        )
    return strip(model)


def prune_scope():
    """A custom-object scope holding the pruning classes (TFMOT compatibility).

    tfcompress registers its classes with Keras on import, so a pruned
    `.keras` file loads with plain `keras.saving.load_model` once tfcompress
    is imported; the scope is kept for code written against TFMOT.

    Example:

    ```python
    import tfcompress as tfc
    with tfc.pruning.prune_scope():
        pass  # keras.saving.load_model("pruned.keras")
    ```
    """
    from tfcompress.pruning.schedule import ConstantSparsity, PolynomialDecay

    return keras.saving.custom_object_scope({
        "PruneLowMagnitude": PruneLowMagnitude,
        "ConstantSparsity": ConstantSparsity,
        "PolynomialDecay": PolynomialDecay,
    })
