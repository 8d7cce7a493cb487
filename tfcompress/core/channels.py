"""Which channels a graph couples: the groups that structured pruning removes together.

A conv's output filters are read by the BatchNormalization after it, by the
next layer's kernel, and, through a residual `Add`, by every branch that adds
into the same tensor. Removing filter `c` means removing channel `c` from all
of them at once: they form one *channel group*. `channel_groups(model)` walks
a Sequential/functional model (nested graph models expanded) and finds every
group, with each weight axis that indexes it (a `Use`):

- `"out"`: the weights that make the channels (a Conv/Dense kernel's output
  axis and its bias, an Embedding table's columns);
- `"chan"`: channel-wise weights on the way (BatchNormalization statistics,
  a DepthwiseConv's kernel with `depth_multiplier=1`);
- `"in"`: the weights that read them (the next kernel's input axis; through
  `Flatten`, every spatial position's copy; through `Concatenate`, at its
  offset).

A channel whose `"in"` slices are all zero is read by nobody: removing it,
and its `"out"`/`"chan"` slices, changes no output (`tfcompress.shrink`).
Layers with their own inner groups (MultiHeadAttention's heads, a keras-hub
TransformerEncoder's feed-forward units) are listed in `INNER`.

A group is *fixed* (left alone) when it reaches a model output or input, or
an op that mixes channels in a way removal would change (LayerNormalization
over the channels, Softmax, a Reshape of the channel axis, an unknown layer);
`reason` says which.

Example:

```python
import keras
from tfcompress.core import channels
inputs = keras.Input((8, 8, 3))
x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
x = keras.layers.BatchNormalization(name="bn")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x))
group = channels.channel_groups(model)["conv"]
assert group.prunable and group.size == 16
assert sorted({u.layer.name for u in group.uses}) == ["bn", "conv", "head"]
```
"""

import dataclasses

import keras
import numpy as np

from tfcompress.core.graph import Graph, is_graph_model

L = keras.layers

#: Layers that act on each channel alone and hold no weights: channels pass through.
PASSTHROUGH = (
    L.Activation, L.ReLU, L.ELU, L.LeakyReLU, L.Dropout, L.SpatialDropout1D,
    L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise, L.GaussianDropout,
    L.AlphaDropout, L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
    L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.ZeroPadding1D, L.ZeroPadding2D,
    L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D, L.UpSampling1D,
    L.UpSampling2D, L.UpSampling3D, L.Identity, L.ActivityRegularization, L.Masking,
)
#: Elementwise merges: their inputs' channels are coupled one to one.
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
#: Layers that make channels, and the config key of their number.
PRODUCERS = {L.Dense: "units", L.Conv1D: "filters", L.Conv2D: "filters",
             L.Conv3D: "filters", L.SeparableConv1D: "filters",
             L.SeparableConv2D: "filters", L.Embedding: "output_dim"}
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)


@dataclasses.dataclass(frozen=True)
class Block:
    """Channels along an axis: `segments` `((group, size), ...)` in order, all repeated
    `repeat` times (a Flatten of `repeat` positions: index `i` is channel `i % total`)."""

    segments: tuple
    repeat: int = 1

    @property
    def size(self):
        return sum(size for _, size in self.segments) * self.repeat


@dataclasses.dataclass(frozen=True)
class Use:
    """One weight axis indexed by channel groups.

    Attributes:
        op: the graph op (a layer of the model) the weight belongs to.
        layer: the layer that owns the weight (`op`, or a sublayer of a composite op).
        weight: the variable.
        axis: the axis of `weight` that runs over channels.
        blocks: a tuple of `Block`s laid out along `axis`, in order.
        role: `"out"`, `"chan"` or `"in"` (see the module docstring).
    """

    op: object
    layer: object
    weight: object
    axis: int
    blocks: tuple
    role: str

    @property
    def groups(self):
        return [g for block in self.blocks for g, _ in block.segments]


@dataclasses.dataclass
class ChannelGroup:
    """Channels removed together: `size` of them, and every `Use` that indexes them."""

    name: str
    size: int
    uses: list
    reason: str = None
    config_key: str = None  # for an inner group: the op's config entry that counts it

    @property
    def prunable(self):
        """True when the group can lose channels (not fixed, made and read by weights)."""
        roles = {u.role for u in self.uses}
        return self.reason is None and "out" in roles and "in" in roles and self.size > 1

    @property
    def producers(self):
        return [u for u in self.uses if u.role == "out"]


# -- inner groups of composite layers ----------------------------------------------

def _heads(attention, op, name):
    """A MultiHeadAttention's heads: q/k/v kernels (d, heads, dim) make them, the output reads."""
    uses = []
    for sub in (attention._query_dense, attention._key_dense, attention._value_dense):
        uses.append((sub, sub.kernel, 1, "out"))
        if sub.bias is not None:
            uses.append((sub, sub.bias, 0, "out"))
    uses.append((attention._output_dense, attention._output_dense.kernel, 0, "in"))
    return name, attention.num_heads, uses


def _mha_inner(op):
    return [(*_heads(op, op, f"{op.name}/heads"), "num_heads")]


def _encoder_inner(op):
    """keras-hub TransformerEncoder: its attention heads and its feed-forward units."""
    inner, outer = op._feedforward_intermediate_dense, op._feedforward_output_dense
    uses = [(inner, inner.kernel, 1, "out"), (outer, outer.kernel, 0, "in")]
    if inner.bias is not None:
        uses.append((inner, inner.bias, 0, "out"))
    return [(*_heads(op._self_attention_layer, op, f"{op.name}/heads"), "num_heads"),
            (f"{op.name}/ffn", op.intermediate_dim, uses, "intermediate_dim")]


def _inner_rules():
    rules = {L.MultiHeadAttention: _mha_inner}
    try:
        import keras_hub
    except ImportError:
        return rules
    rules[keras_hub.layers.TransformerEncoder] = _encoder_inner
    return rules


#: `{layer class: fn(op) -> [(name, size, [(layer, weight, axis, role)], config key)]}`:
#: groups that live inside one layer (filled on first use: keras-hub is optional).
INNER = None


def inner_rule(op):
    global INNER
    if INNER is None:
        INNER = _inner_rules()
    for cls in type(op).__mro__:
        if cls in INNER:
            return INNER[cls]
    return None


# -- the walk ---------------------------------------------------------------------

class _Groups:
    """Union-find over atoms (the channels one op makes), with uses and fix reasons."""

    def __init__(self):
        self.parent, self.size, self.name, self.reason, self.key = {}, {}, {}, {}, {}
        self.uses = []

    def new(self, name, size, reason=None, key=None):
        atom = len(self.parent)
        self.parent[atom], self.size[atom], self.name[atom] = atom, size, name
        self.reason[atom], self.key[atom] = reason, key
        return atom

    def find(self, atom):
        while self.parent[atom] != atom:
            self.parent[atom] = self.parent[self.parent[atom]]
            atom = self.parent[atom]
        return atom

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            first, second = min(a, b), max(a, b)
            self.parent[second] = first
            self.reason[first] = self.reason[first] or self.reason[second]

    def use(self, use):
        """Records `use`; a layout that does not fit the weight's axis fixes its groups."""
        if sum(b.size for b in use.blocks) != int(use.weight.shape[use.axis]):
            self.fix(use.blocks, f"'{use.op.name}' (its weight {use.weight.name} does not "
                                 "match the channels it reads)")
        self.uses.append(use)

    def fix(self, blocks, reason):
        for block in blocks or ():
            for atom, _ in block.segments:
                root = self.find(atom)
                self.reason[root] = self.reason[root] or reason


def _channels_last(op):
    return getattr(op, "data_format", "channels_last") in (None, "channels_last")


def _last_dim(tensor_shape):
    return tensor_shape[-1] if tensor_shape else None


def channel_groups(model):
    """`{group name: ChannelGroup}` of a Sequential/functional `model` (see the module docstring).

    Groups are named after the first layer that makes their channels
    (`"conv1_conv"`), inner groups `"<layer>/heads"`, `"<layer>/ffn"`.
    """
    if not is_graph_model(model):
        raise ValueError(
            f"{type(model).__name__} is a subclassed model: its graph is Python code, so "
            "the channels its layers share cannot be read from it. Build it as a "
            "functional or Sequential model.")
    graph = Graph(model)
    groups = _Groups()
    layout, shapes = {}, graph.shapes

    def fresh(name, size, reason):
        return (Block(((groups.new(name, size, reason), size),)),)

    for key, tensor in zip(graph.inputs, model.inputs):
        layout[key] = fresh(f"input:{graph.names.get(key)}", _last_dim(tensor.shape) or 0,
                            "a model input")
    for call in graph.calls:
        ins = [layout.get(k) for k in call.ins]
        outs = _visit(call, ins, [shapes.get(k) for k in call.ins],
                      [shapes.get(k) for k in call.outs], groups, fresh)
        for key, blocks in zip(call.outs, outs):
            layout[key] = blocks
    for key in graph.outputs:
        groups.fix(layout.get(key), "a model output")
    return _collect(groups)


def _visit(call, ins, in_shapes, out_shapes, groups, fresh):
    """The output layouts of one call; records its uses and couplings in `groups`."""
    op = call.op
    name = getattr(op, "name", type(op).__name__)
    first = ins[0] if ins else None

    def unknown(reason):
        for blocks in ins:
            groups.fix(blocks, reason)
        return [fresh(f"{name}:out", _last_dim(s) or 0, reason) for s in out_shapes]

    if not isinstance(op, keras.layers.Layer):
        return unknown(f"'{name}' (a keras.ops call)")
    inner = inner_rule(op)
    if inner is not None:
        outs = unknown(f"'{name}' ({type(op).__name__}) at its inputs or outputs")
        for group_name, size, uses, config_key in inner(op):
            atom = groups.new(group_name, size, key=config_key)
            blocks = (Block(((atom, size),)),)
            for layer, weight, axis, role in uses:
                groups.use(Use(op, layer, weight, axis, blocks, role))
        return outs
    if isinstance(op, _TRANSPOSED) or not _channels_last(op):
        return unknown(f"'{name}' ({type(op).__name__}, channels_first or transposed)")
    if isinstance(op, L.Embedding):
        return [_make(op, op.embeddings, None, groups, name)]
    if isinstance(op, tuple(PRODUCERS)):
        return _producer(op, first, groups, name, unknown)
    if isinstance(op, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        if op.depth_multiplier != 1:
            return unknown(f"'{name}' (depth_multiplier {op.depth_multiplier})")
        groups.use(Use(op, op, op.kernel, len(op.kernel.shape) - 2, first, "chan"))
        if op.use_bias:
            groups.use(Use(op, op, op.bias, 0, first, "chan"))
        return [first]
    if isinstance(op, L.BatchNormalization):
        axis = op.axis if isinstance(op.axis, int) else None
        rank = len(in_shapes[0]) if in_shapes[0] else None
        if axis is None or rank is None or axis not in (-1, rank - 1):
            return unknown(f"'{name}' (BatchNormalization not over the last axis)")
        for weight in (op.gamma, op.beta, op.moving_mean, op.moving_variance):
            if weight is not None:
                groups.use(Use(op, op, weight, 0, first, "chan"))
        return [first]
    if isinstance(op, PASSTHROUGH) or (isinstance(op, L.Rescaling)
                                       and np.ndim(op.scale) == 0 and np.ndim(op.offset) == 0):
        if isinstance(op, L.Activation) and _mixes_channels(op):
            return unknown(f"'{name}' (softmax over the channels)")
        return [first] * len(out_shapes)
    if isinstance(op, L.Flatten):
        return [_flatten(first, in_shapes[0], unknown, name)]
    if isinstance(op, L.Reshape):
        if (in_shapes[0] and out_shapes[0] and in_shapes[0][-1] is not None
                and in_shapes[0][-1] == out_shapes[0][-1]):
            return [first]
        return unknown(f"'{name}' (a Reshape of the channel axis)")
    if isinstance(op, MERGES):
        return [_merge(ins, in_shapes, groups, name)]
    if isinstance(op, L.Concatenate):
        rank = len(in_shapes[0]) if in_shapes[0] else None
        if op.axis in (-1, (rank or 0) - 1):
            return [tuple(b for blocks in ins for b in blocks)]
        return [_merge(ins, in_shapes, groups, name)]
    return unknown(f"'{name}' ({type(op).__name__}, whose channel rule is unknown)")


def _mixes_channels(op):
    activation = getattr(op, "activation", None)
    return getattr(activation, "__name__", "") in ("softmax", "log_softmax")


def _make(op, weight, bias, groups, name, axis=-1, layer=None):
    """New channels made by `weight`'s last axis (and `bias`)."""
    size = int(weight.shape[axis])
    reason = f"'{name}' (its softmax activation mixes them)" if _mixes_channels(op) else None
    atom = groups.new(name, size, reason=reason, key=PRODUCERS.get(type(op)))
    blocks = (Block(((atom, size),)),)
    groups.use(Use(op, layer or op, weight, len(weight.shape) - 1, blocks, "out"))
    if bias is not None:
        groups.use(Use(op, layer or op, bias, 0, blocks, "out"))
    return blocks


def _producer(op, first, groups, name, unknown):
    if getattr(op, "groups", 1) != 1:
        return unknown(f"'{name}' (grouped convolution)")
    if isinstance(op, (L.SeparableConv1D, L.SeparableConv2D)):
        if op.depth_multiplier != 1:
            return unknown(f"'{name}' (depth_multiplier {op.depth_multiplier})")
        depthwise, pointwise = op.depthwise_kernel, op.pointwise_kernel
        groups.use(Use(op, op, depthwise, len(depthwise.shape) - 2, first, "chan"))
        groups.use(Use(op, op, pointwise, len(pointwise.shape) - 2, first, "in"))
        return [_make(op, pointwise, op.bias if op.use_bias else None, groups, name)]
    kernel = op.kernel
    if getattr(op, "quantization_mode", None) or getattr(op, "lora_enabled", False):
        return unknown(f"'{name}' (quantized or LoRA)")
    groups.use(Use(op, op, kernel, len(kernel.shape) - 2, first, "in"))
    return [_make(op, kernel, op.bias if op.use_bias else None, groups, name)]


def _flatten(blocks, shape, unknown, name):
    if shape is None or any(d is None for d in shape[1:]):
        return unknown(f"'{name}' (Flatten of an unknown shape)")[0]
    if len(blocks) != 1 or blocks[0].repeat != 1:
        segments = tuple(s for b in blocks for s in b.segments)
        if any(b.repeat != 1 for b in blocks):
            return unknown(f"'{name}' (Flatten of flattened channels)")[0]
        blocks = (Block(segments),)
    positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
    return (Block(blocks[0].segments, blocks[0].repeat * positions),)


def _merge(ins, in_shapes, groups, name):
    """Couples the inputs' channels one to one (broadcast inputs of one channel aside)."""
    taking = [(blocks, shape) for blocks, shape in zip(ins, in_shapes)
              if not (shape and shape[-1] == 1)]
    if not taking:
        return ins[0]
    reference = taking[0][0]
    structure = [(b.repeat, [s for _, s in b.segments]) for b in reference]
    for blocks, _ in taking[1:]:
        if [(b.repeat, [s for _, s in b.segments]) for b in blocks] != structure:
            for other, _ in taking:
                groups.fix(other, f"'{name}' (merges tensors whose channels are laid out "
                                  "differently)")
            return reference
        for mine, theirs in zip(reference, blocks):
            for (a, _), (b, _) in zip(mine.segments, theirs.segments):
                groups.union(a, b)
    return reference


def _collect(groups):
    found = {}
    for atom in groups.parent:
        root = groups.find(atom)
        if root not in found:
            found[root] = ChannelGroup(groups.name[root], groups.size[root], [],
                                       config_key=groups.key[root])
        found[root].reason = groups.reason[root]
    uses_of = {}
    for use in groups.uses:
        blocks = tuple(Block(tuple((found[groups.find(a)].name, s) for a, s in b.segments),
                             b.repeat) for b in use.blocks)
        use = dataclasses.replace(use, blocks=blocks)
        for group in set(use.groups):
            uses_of.setdefault(group, []).append(use)
    result = {}
    for group in found.values():
        group.uses = uses_of.get(group.name, [])
        if group.uses:
            result[group.name] = group
    return result


def mask_vector(blocks, vectors):
    """The 0/1 (or any per-channel) vector along an axis laid out as `blocks`.

    `vectors` maps each group name to its per-channel values; a group it
    does not name is all ones.
    """
    import keras.ops as ops

    parts = []
    for block in blocks:
        inner = ops.concatenate([ops.convert_to_tensor(vectors[g]) if g in vectors
                                 else ops.ones((size,)) for g, size in block.segments])
        parts.append(ops.tile(inner, [block.repeat]) if block.repeat != 1 else inner)
    return parts[0] if len(parts) == 1 else ops.concatenate(parts)


def kept_indices(blocks, kept):
    """Indices along an axis laid out as `blocks` that survive, given `{group: kept channels}`."""
    out, offset = [], 0
    for block in blocks:
        total = sum(size for _, size in block.segments)
        inner, start = [], 0
        for group, size in block.segments:
            inner.extend(start + np.asarray(kept[group], dtype=int))
            start += size
        for r in range(block.repeat):
            out.extend(offset + r * total + np.asarray(inner, dtype=int))
        offset += total * block.repeat
    return np.asarray(out, dtype=int)


def positions(blocks, group):
    """`(occurrences, size)` indices of `group`'s channels along an axis laid out as `blocks`
    (one row per copy: a Flatten repeats each channel once per position)."""
    rows, offset = [], 0
    for block in blocks:
        total, start = sum(s for _, s in block.segments), 0
        for name, size in block.segments:
            if name == group:
                for r in range(block.repeat):
                    rows.append(offset + r * total + start + np.arange(size))
            start += size
        offset += total * block.repeat
    return np.stack(rows)


def kept(size, fraction):
    """How many of `size` channels (or of a matrix's `size` ranks) a kept `fraction`
    leaves: rounded, at least one. The one rule for sensitivity rows and plans alike.

    Example:

    ```python
    from tfcompress.core import channels
    assert channels.kept(32, 0.375) == 12 and channels.kept(8, 0.0625) == 1
    ```
    """
    return max(1, int(round(size * fraction)))


def weakest(group, count):
    """Indices of the `count` channels of `group` whose producing (`"out"`) weights have the
    smallest L2 norm (ties: the lower index), sorted.

    Example:

    ```python
    import keras, numpy as np
    from tfcompress.core import channels
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"),
                              keras.layers.Dense(2)])
    model.get_layer("a").kernel.assign(np.diag([1.0, 3.0, 2.0])[:, [0, 1, 2, 2]] * [1, 1, 1, 0])
    group = channels.channel_groups(model)["a"]
    assert list(channels.weakest(group, 2)) == [0, 3]
    ```
    """
    squares = np.zeros(group.size)
    for use in group.producers:
        value = np.square(keras.ops.convert_to_numpy(use.weight).astype("float64"))
        axis = use.axis % value.ndim
        along = value.sum(axis=tuple(a for a in range(value.ndim) if a != axis))
        squares += along[positions(use.blocks, group.name)].sum(axis=0)
    return np.sort(np.argsort(squares, kind="stable")[:count])


def unread(use, group, indices):
    """`use.weight`'s value (numpy) with its entries that read `group`'s channels `indices`
    set to zero: after that, `tfcompress.shrink` removes those channels.

    Example:

    ```python
    import keras, numpy as np
    from tfcompress.core import channels
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"),
                              keras.layers.Dense(2, name="b")])
    group = channels.channel_groups(model)["a"]
    reader = [u for u in group.uses if u.role == "in"][0]
    assert not channels.unread(reader, group, [1])[1].any()
    ```
    """
    value = keras.ops.convert_to_numpy(use.weight).copy()
    rows = positions(use.blocks, group.name)[:, np.asarray(indices, dtype=int)].ravel()
    index = [slice(None)] * value.ndim
    index[use.axis % value.ndim] = rows
    value[tuple(index)] = 0
    return value
