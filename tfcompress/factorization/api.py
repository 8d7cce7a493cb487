"""`factorize`: Dense, EinsumDense and Embedding layers split into two thinner layers."""

import numbers
import warnings

import keras
import numpy as np

from tfcompress.core import Graph, copy_layer, find, is_graph_model, rewrite
from tfcompress.core.wrapper import InsertedLayer, WeightWrapper
from tfcompress.factorization import svd

#: The first factor of a layer named `x` is named `x + SUFFIX`; the second keeps `x`.
SUFFIX = "_lowrank"

_SUPPORTED = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)
_SUPPORTED_NAMES = "Dense, EinsumDense, Embedding"
_RANK_LETTERS = "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA"

SUBCLASSED_ERROR = (
    "{name} is a subclassed model: its graph is Python code, so factorize cannot put two "
    "layers where one was. Build it as a functional or Sequential model, or split the layer "
    "in your model's code: `Dense(r, use_bias=False)` then `Dense(n)`, with kernels "
    "`tfcompress.factorization.svd.factors(kernel, r)`.")


def factorize(model, rank=None, energy=None, ratio=None, layers=None):
    """A copy of `model` with Dense, EinsumDense and Embedding layers split in two by SVD.

    Each selected layer with an m×n kernel `W` (Embedding: its V×d table)
    becomes two plain Keras layers initialised from the truncated SVD
    `W ≈ (U_r·sqrt(S_r))·(sqrt(S_r)·V_rᵀ)`, which hold `r·(m + n)` values:

    - `Dense(n)` → `Dense(r, use_bias=False, name=f"{name}_lowrank")` then
      `Dense(n, activation, use_bias, name=name)` with the original bias;
    - `Embedding(V, d)` → `Embedding(V, r, mask_zero, name=f"{name}_lowrank")`
      then `Dense(d, use_bias=False, name=name)` (the mask still propagates);
    - `EinsumDense` → two EinsumDense layers through an `r`-wide axis, where
      every kernel axis is either a contracted input axis or an output axis
      (`"abc,cd->abd"`, `"abc,cde->abde"`, `"...b,bc->...c"`); a kernel axis
      that is also an input and output axis (per-head weights) leaves the
      layer as it is.

    The second layer keeps the original name, so exported output names stay
    the same. Kernel regularizers go on both factors; bias regularizers and
    constraints, the activation and the activity regularizer on the second;
    a kernel constraint cannot hold on a product and is dropped (named in
    the warning). Layers left as they are (unsupported equations, subclasses
    of the three classes, quantized layers, layers inside composite layers)
    are named in one warning. The result is a new, uncompiled functional
    model with its own weights (`model` is not changed): fine-tune it with
    an ordinary `fit`, then prune, quantize or export it like any model.

    Args:
        model: a built Sequential or functional model (nested graph models,
            several inputs/outputs and bare `keras.ops` calls are fine).
        rank: the rank of every selected layer (an int >= 1, clipped to
            `min(m, n)`), or `{layer name: rank}` (those layers only). An
            explicit rank always factorizes, even where the pair holds more
            values than `W` (at `min(m, n)` it reproduces `W`).
        energy: in (0, 1]: per layer, the smallest rank whose singular values
            keep this fraction of `Σ s_i²`.
        ratio: in (0, 1]: per layer, the largest rank whose pair keeps at
            most this fraction of the kernel's parameters.
        layers: names of the layers to factorize (default: every supported
            layer). With `energy` or `ratio`, a layer is factorized only
            where its pair has fewer parameters than its kernel.

    Exactly one of `rank`, `energy`, `ratio` is given.

    Returns:
        The factorized model (see `factorized_layers`).

    Example:

    ```python
    import keras
    import tfcompress as tfc
    base = keras.Sequential([keras.Input((64,)),
                             keras.layers.Dense(64, activation="relu", name="hidden"),
                             keras.layers.Dense(10, name="logits")])
    small = tfc.factorization.factorize(base, ratio=0.25)   # rank 8 and rank 2
    assert tfc.factorization.factorized_layers(small) == ["hidden", "logits"]
    assert small.count_params() < base.count_params()
    ```
    """
    _check_model(model)
    rule = _check_choice(rank, energy, ratio, layers)
    chosen = _check_layers(model, rank if isinstance(rank, dict) else None, layers)
    plan = _Factorize(rule, chosen)
    result = plan.run(model)
    plan.warn()
    return result


def factorized_layers(model):
    """Names of the layers of `model` that `factorize` split (each has a `<name>_lowrank` twin).

    The layers are found however deep (nested models, inside pruning or
    quantization wrappers), so the count survives fine-tuning, pruning, QAT
    and save/load.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="hidden"),
                             keras.layers.Dense(2, name="logits")])
    small = tfc.factorization.factorize(base, rank={"hidden": 2})
    assert tfc.factorization.factorized_layers(small) == ["hidden"]
    ```
    """
    if not isinstance(model, keras.layers.Layer):
        return []
    everything = model._flatten_layers(include_self=False, recursive=True)
    by_name = {}
    for layer in everything:
        by_name.setdefault(layer.name, []).append(layer)
    found = []
    for layer in everything:
        if (type(layer) in (keras.layers.Dense, keras.layers.EinsumDense)
                and layer.name not in found
                and any(type(twin) in _SUPPORTED for twin in by_name.get(layer.name + SUFFIX, []))):
            found.append(layer.name)
    return found


# -- checks -------------------------------------------------------------------

def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"factorize takes a keras Model, got {type(model).__name__}.")
    if not is_graph_model(model):
        raise ValueError(SUBCLASSED_ERROR.format(name=type(model).__name__))
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; give it an Input (or call it on "
                         "data) before factorizing.")
    wrapped = find(model, WeightWrapper) + find(model, InsertedLayer)
    if wrapped:
        raise ValueError(
            f"Model '{model.name}' carries {type(wrapped[0]).__name__} layers ({wrapped[0].name}, "
            "...). Factorize the float model first, then prune or quantize the result; or "
            "tfcompress.strip(model) before factorizing.")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_rank(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_choice(rank, energy, ratio, layers):
    given = [n for n, v in (("rank", rank), ("energy", energy), ("ratio", ratio)) if v is not None]
    if len(given) != 1:
        got = "none of them" if not given else " and ".join(given)
        raise ValueError(
            f"factorize takes exactly one of rank=, energy=, ratio= (got {got}): e.g. "
            "factorize(model, energy=0.9) keeps 90% of each kernel's squared singular values, "
            "ratio=0.25 keeps 25% of its parameters, rank=16 sets the rank.")
    if rank is not None:
        if isinstance(rank, dict):
            bad = {k: v for k, v in rank.items() if not isinstance(k, str) or not _is_rank(v)}
            if not rank or bad:
                raise ValueError(f"rank must be an int >= 1 or a non-empty dict {{layer name: "
                                 f"int >= 1}}, got {rank!r}.")
            if layers is not None:
                raise ValueError("rank as a dict already names the layers to factorize; leave "
                                 "layers=None.")
        elif not _is_rank(rank):
            raise ValueError(f"rank must be an int >= 1 or a dict {{layer name: int >= 1}}, got "
                             f"{rank!r}.")
    for name, value in (("energy", energy), ("ratio", ratio)):
        if value is not None and not (_is_number(value) and 0 < value <= 1):
            raise ValueError(f"{name} must be a number in (0, 1], got {value!r}.")
    if layers is not None and (isinstance(layers, str) or not isinstance(layers, (list, tuple))
                               or not all(isinstance(n, str) for n in layers)):
        raise ValueError(f"layers must be a list of layer names, e.g. ['dense'], got "
                         f"{layers!r}.")
    return {"rank": rank, "energy": energy, "ratio": ratio}


def _check_layers(model, rank_dict, layers):
    """The set of layer names to factorize (None: every supported layer), checked."""
    names = rank_dict.keys() if rank_dict is not None else layers
    if names is None:
        return None
    everything = model._flatten_layers(include_self=False, recursive=True)
    graph_level = {call.op.name for call in Graph(model).calls
                   if isinstance(call.op, keras.layers.Layer)}
    by_name = {layer.name: layer for layer in everything}
    for name in names:
        if name not in by_name:
            raise ValueError(f"Model '{model.name}' has no layer '{name}'; its layers: "
                             f"{', '.join(by_name)}.")
        if type(by_name[name]) not in _SUPPORTED:
            raise ValueError(f"Layer '{name}' is of type {type(by_name[name]).__name__}; "
                             f"factorize splits {_SUPPORTED_NAMES} layers.")
        if name not in graph_level:
            owner = next((layer.name for layer in everything if any(
                sub is by_name[name] for sub in layer._flatten_layers(include_self=False))), "?")
            raise ValueError(
                f"Layer '{name}' is inside the composite layer '{owner}', whose code calls it: "
                "factorize splits the layers of the model's graph only.")
    return set(names)


# -- the rewrite ----------------------------------------------------------------

class _Factorize:
    """Rebuilds a graph model with each selected layer replaced by two."""

    def __init__(self, rule, chosen):
        self.rule, self.chosen = rule, chosen
        self.left = []  # (layer name, why it was left as it is)

    def run(self, model, name=None):
        names = {layer.name for layer in model._flatten_layers(include_self=False)}
        self.paired = {n for n in names if n + SUFFIX in names}
        self.paired |= {n + SUFFIX for n in self.paired}
        return rewrite(model, self._make, name=name or model.name)

    def _make(self, op):
        if not isinstance(op, keras.layers.Layer):
            return op  # a bare keras.ops call
        if isinstance(op, keras.Model) and is_graph_model(op):
            return _Factorize(self.rule, self.chosen)._nested(op, self)
        if type(op) in _SUPPORTED:
            if self.chosen is not None and op.name not in self.chosen:
                return copy_layer(op)
            if op.name in self.paired:
                if self.chosen is not None:
                    self.left.append((op.name, "already factorized"))
                return copy_layer(op)
            return self._split(op)
        if self.chosen is None:
            inner = [sub for sub in op._flatten_layers(include_self=False, recursive=True)
                     if isinstance(sub, _SUPPORTED)]
            if isinstance(op, _SUPPORTED):
                self.left.append((op.name, f"a subclass of {type(op).__mro__[1].__name__} "
                                           f"({type(op).__name__}): its call may differ"))
            elif inner:
                self.left.append((op.name, f"a composite {type(op).__name__}: its "
                                           f"{len(inner)} Dense/EinsumDense/Embedding "
                                           "sublayers are called by its code"))
        return copy_layer(op)

    def _nested(self, model, outer):
        new = self.run(model, name=model.name)
        outer.left += self.left
        return new

    def _rank(self, layer, matrix):
        m, n = matrix.shape
        rule = dict(self.rule)
        if isinstance(rule["rank"], dict):
            rule["rank"] = rule["rank"][layer.name]
        r = svd.choose_rank(svd.singular_values(matrix), m, n, **rule)
        if r is None and self.chosen is not None:
            self.left.append((layer.name, "a pair at the chosen rank would not have fewer "
                                          "parameters"))
        return r

    def _split(self, layer):
        if getattr(layer, "quantization_mode", None) is not None:
            self.left.append((layer.name, f"quantized ({layer.quantization_mode}) weights"))
            return copy_layer(layer)
        if isinstance(layer, keras.layers.EinsumDense):
            return self._einsum(layer)
        if isinstance(layer, keras.layers.Embedding):
            return self._embedding(layer)
        return self._dense(layer)

    def _constraint(self, layer, key):
        if layer.get_config().get(key) is not None:
            self.left.append((layer.name, f"factorized, but its {key} is dropped (it cannot "
                                          "hold on a product of two factors)"))

    def _dense(self, layer):
        kernel = _numpy(layer.kernel)
        r = self._rank(layer, kernel)
        if r is None:
            return copy_layer(layer)
        self._constraint(layer, "kernel_constraint")
        a, b = svd.factors(kernel, r)
        first = keras.layers.Dense.from_config(_config(
            layer, units=r, use_bias=False, activation=None, bias_regularizer=None,
            bias_constraint=None, kernel_constraint=None, name=layer.name + SUFFIX))
        second = keras.layers.Dense.from_config(_config(layer, kernel_constraint=None))
        _keep_activity_regularizer(layer, second)
        bias = [_numpy(layer.bias)] if layer.use_bias else []
        return _Pair(lambda x: first, lambda x: second, [a], [b] + bias)

    def _embedding(self, layer):
        table = _numpy(layer.embeddings)
        r = self._rank(layer, table)
        if r is None:
            return copy_layer(layer)
        self._constraint(layer, "embeddings_constraint")
        a, b = svd.factors(table, r)
        config = _config(layer, output_dim=r, embeddings_constraint=None,
                         activity_regularizer=None, name=layer.name + SUFFIX)
        first = keras.layers.Embedding.from_config(config)
        second = keras.layers.Dense(
            table.shape[1], use_bias=False, name=layer.name, dtype=layer.dtype_policy,
            kernel_regularizer=keras.regularizers.get(
                layer.get_config()["embeddings_regularizer"]))
        _keep_activity_regularizer(layer, second)
        return _Pair(lambda x: first, lambda x: second, [a], [b])

    def _einsum(self, layer):
        plan = einsum_plan(layer.equation)
        if isinstance(plan, str):
            self.left.append((layer.name, f"equation '{layer.equation}': {plan}"))
            return copy_layer(layer)
        kernel = _numpy(layer.kernel)
        order = plan["contracted"] + plan["outputs"]
        kernel_axes = plan["kernel"]
        moved = np.transpose(kernel, [kernel_axes.index(c) for c in order])
        in_dims = moved.shape[:len(plan["contracted"])]
        out_dims = moved.shape[len(plan["contracted"]):]
        matrix = moved.reshape(int(np.prod(in_dims)), int(np.prod(out_dims)))
        r = self._rank(layer, matrix)
        if r is None:
            return copy_layer(layer)
        self._constraint(layer, "kernel_constraint")
        a, b = svd.factors(matrix, r)
        a = a.reshape(in_dims + (r,))
        b = b.reshape((r,) + out_dims)
        bias = [_numpy(layer.bias)] if layer.bias is not None else []
        made = {}

        def first(x):
            if "first" not in made:
                made["first"] = keras.layers.EinsumDense.from_config(_config(
                    layer, equation=plan["first"],
                    output_shape=plan["first_shape"](layer.compute_output_shape(x.shape), r),
                    bias_axes=None, activation=None, bias_regularizer=None,
                    bias_constraint=None, kernel_constraint=None, activity_regularizer=None,
                    name=layer.name + SUFFIX))
            return made["first"]

        def second(x):
            if "second" not in made:
                made["second"] = keras.layers.EinsumDense.from_config(_config(
                    layer, equation=plan["second"], kernel_constraint=None))
                _keep_activity_regularizer(layer, made["second"])
            return made["second"]

        return _Pair(first, second, [a], [b] + bias)

    def warn(self):
        if not self.left:
            return
        lines = "; ".join(f"{name}: {why}" for name, why in self.left)
        warnings.warn(f"factorize left these layers as they are (or changed them as said): "
                      f"{lines}. Supported: {_SUPPORTED_NAMES} layers of the model's graph.",
                      stacklevel=3)


class _Pair:
    """The function `rewrite` calls in place of one layer: two layers, weights set once."""

    def __init__(self, first, second, first_weights, second_weights):
        self.first, self.second = first, second  # x -> layer (made on the first call)
        self.weights = (first_weights, second_weights)
        self.done = False

    def __call__(self, x, **kwargs):
        first = self.first(x)
        middle = first(x, **kwargs)
        second = self.second(middle)
        y = second(middle, **kwargs)
        if not self.done:
            first.set_weights(self.weights[0])
            second.set_weights(self.weights[1])
            self.done = True
        return y


def _numpy(value):
    """A variable's (or a LoRA kernel tensor's) value as a numpy array."""
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def _config(layer, **changes):
    """`layer`'s config with `changes`, LoRA off (its product is already in the kernel)."""
    config = layer.get_config()
    config.pop("lora_rank", None)
    config.pop("lora_alpha", None)
    config.update(changes)
    return config


def _keep_activity_regularizer(layer, second):
    if getattr(layer, "activity_regularizer", None) is not None:
        second.activity_regularizer = layer.activity_regularizer


def einsum_plan(equation):
    """How an EinsumDense `equation` splits in two, or a string saying why it cannot.

    A dict with the kernel's axis letters split into `contracted` (input
    axes summed over) and `outputs`, and the two layers' equations `first`
    (input → an `r`-wide axis) and `second` (that axis → output), plus
    `first_shape(full output shape, r)`: the first layer's `output_shape`.

    Example:

    ```python
    from tfcompress.factorization.api import einsum_plan
    plan = einsum_plan("abc,cd->abd")
    assert (plan["first"], plan["second"]) == ("abc,cz->abz", "abz,zd->abd")
    assert "per-head" in einsum_plan("abc,bcd->abd")
    ```
    """
    try:
        left_side, out = equation.replace(" ", "").split("->")
        inp, kernel = left_side.split(",")
    except ValueError:
        return "not of the form input,kernel->output"
    left = inp.startswith("...") and out.startswith("...")
    right = inp.endswith("...") and out.endswith("...") and not left
    i_letters, o_letters = inp.replace("...", ""), out.replace("...", "")
    if "..." in kernel or ("..." in inp) != (left or right):
        return "an ellipsis where EinsumDense does not put one"
    contracted = [c for c in kernel if c in i_letters and c not in o_letters]
    outputs = [c for c in kernel if c in o_letters and c not in i_letters]
    other = [c for c in kernel if c not in contracted + outputs]
    if other:
        return (f"kernel axes {''.join(other)} are also input and output axes (per-head "
                "weights), so the kernel is not one matrix")
    if not contracted or not outputs:
        return "the kernel has no contracted or no output axis"
    if not left and i_letters and i_letters[0] in contracted:
        return "the batch axis is contracted"
    letter = next(c for c in _RANK_LETTERS if c not in equation)
    middle = "".join(c for c in i_letters if c not in contracted) + letter
    dots_l, dots_r = ("...", "") if left else ("", "...") if right else ("", "")

    def first_shape(full_output_shape, r):
        # EinsumDense's output_shape: every output letter but the batch one
        # (all of them when the ellipsis is on the left).
        dims = dict(zip(o_letters, full_output_shape[-len(o_letters):] if left
                        else full_output_shape[:len(o_letters)]))
        shape = [r if c == letter else dims.get(c) for c in middle]
        return shape if left else shape[1:]

    return {"kernel": kernel, "contracted": contracted, "outputs": outputs,
            "first": f"{dots_l}{i_letters}{dots_r},{''.join(contracted)}{letter}->"
                     f"{dots_l}{middle}{dots_r}",
            "second": f"{dots_l}{middle}{dots_r},{letter}{''.join(outputs)}->"
                      f"{dots_l}{o_letters}{dots_r}",
            "first_shape": first_shape}
