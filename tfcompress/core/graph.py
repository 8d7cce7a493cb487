"""Finding and rewriting layers: the one traversal every technique uses.

- `find(model, cls)`: layers of a type anywhere inside a model, however deep
  (nested models, composite layers, wrappers);
- `map_layers(model, fn)`: the same graph with each layer replaced by one new
  layer (1→1: wrap, strip, copy);
- `Graph(model)`: the calls of a graph model with their producers and
  consumers (which layer reads which layer's output), for rules that depend
  on a layer's neighbours;
- `rewrite(model, fn)`: the graph rebuilt with each op replaced by whatever
  `fn(op)` returns — a layer, or a function that runs several layers (1→n:
  split a layer in two, add fake-quant after an op). Shapes propagate by
  running the new layers on symbolic inputs.
"""

import itertools

import keras


def is_graph_model(model):
    """True for Sequential and functional models (the ones we can rebuild).

    Example:

    ```python
    import keras
    from tfcompress.core import is_graph_model
    assert is_graph_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    ```
    """
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def find(model, cls):
    """All layers of type `cls` inside `model` (itself included), however deep.

    Example:

    ```python
    import keras
    from tfcompress.core import find
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    assert len(find(model, keras.layers.Dense)) == 2
    ```
    """
    if isinstance(model, cls):
        return [model]
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, cls) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def map_layers(model, fn):
    """Rebuilds a Sequential/functional `model`, replacing each layer by `fn(layer)`.

    `fn` returns a new layer; nested models are rebuilt recursively. Input
    layers and bare ops are kept. The new model is not compiled.

    Example: copy every layer, and give Dense layers no bias.

    ```python
    import keras
    from tfcompress.core import copy_layer, map_layers
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    def no_bias(layer):
        if isinstance(layer, keras.layers.Dense):
            return keras.layers.Dense.from_config({**layer.get_config(), "use_bias": False})
        return copy_layer(layer)
    assert all(not l.use_bias for l in map_layers(model, no_bias).layers)
    ```
    """
    def clone_fn(layer):
        if isinstance(layer, keras.layers.InputLayer) or not isinstance(
            layer, keras.layers.Layer
        ):
            return layer  # inputs, and bare ops (keras.ops calls) in the graph
        return fn(layer)

    # clone_model copies the compile state (and builds a fresh optimizer); the
    # result has different layers and weights, so it comes back uncompiled,
    # like TFMOT's. The flag is restored whatever happens.
    compiled = getattr(model, "compiled", False)
    model.compiled = False
    try:
        new = keras.models.clone_model(model, clone_function=clone_fn, recursive=True)
    finally:
        model.compiled = compiled
    if model.built and not new.built:
        new.build(model.input_shape)
    return new


def rewrite(model, operation_fn, input_fn=None, name=None, input_shapes=None):
    """Rebuilds a graph model, running `operation_fn(op)` in place of each op.

    `operation_fn(op)` gets each layer (or bare `keras.ops` op) of `model`
    once and returns what to call instead: a new layer, the op itself, or
    any function of the op's inputs (several layers: 1→n). `input_fn(old,
    new)` may replace each fresh model input (e.g. to fake-quantize it).
    Inputs keep their names and the input structure (dict, list, single
    tensor) stays the same, so exports keep their signatures.
    `input_shapes` (a list, one per input) replaces the inputs' shapes (a
    nested model whose input shrank).

    Example: add a ReLU after each Dense (one layer becomes two).

    ```python
    import keras
    from tfcompress.core import copy_layer, rewrite
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    def then_relu(op):
        layer = copy_layer(op)
        if not isinstance(op, keras.layers.Dense):
            return layer
        relu = keras.layers.ReLU(name=f"{op.name}_relu")
        return lambda x, **kwargs: relu(layer(x, **kwargs))
    assert len(rewrite(model, then_relu).layers) == 5
    ```
    """
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    # Named after the input layers (not the tensors, which a Sequential
    # names `keras_tensor`), so the exported signature keeps its input names.
    shapes = input_shapes or [x.shape for x in model.inputs]
    inputs = [keras.Input(batch_shape=shape, dtype=x.dtype,
                          name=x._keras_history.operation.name)
              for x, shape in zip(model.inputs, shapes)]
    feeds = [input_fn(old, new) if input_fn else new for old, new in zip(model.inputs, inputs)]
    made = {}

    def replace(op):
        if id(op) not in made:
            made[id(op)] = operation_fn(op)
        return made[id(op)]

    outputs = model._run_through_graph(feeds, operation_fn=replace)
    structure = model._inputs_struct
    if isinstance(structure, dict):
        position = {id(x): i for i, x in enumerate(model.inputs)}
        inputs = {key: inputs[position[id(ref)]] for key, ref in structure.items()}
    elif not isinstance(structure, (list, tuple)):
        inputs = inputs[0]  # one input, not a list of one: called with a bare tensor
    return keras.Model(inputs, outputs, name=name or model.name)


class Call:
    """One call of a layer (or bare op) in a `Graph`, with tensor keys in and out."""

    def __init__(self, op, ins, outs):
        self.op, self.ins, self.outs = op, ins, outs


class Graph:
    """The calls of a Sequential/functional model, with producers and consumers.

    With `expand_nested=True` (default) nested graph models are expanded in
    place, so a layer's consumers are the layers that really read its output;
    with False a nested model is one op.

    Example:

    ```python
    import keras
    from tfcompress.core import Graph
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(hidden))
    graph = Graph(model)
    assert [c.name for c in graph.consumers_of(model.get_layer("hidden"))] == ["relu"]
    ```
    """

    def __init__(self, model, expand_nested=True):
        self.calls, self.alias, self.names, self.shapes = [], {}, {}, {}
        self.expand_nested = expand_nested
        self._scopes = itertools.count(1)
        self.inputs = [(0, id(t)) for t in model.inputs]
        self.shapes.update((key, tuple(t.shape)) for key, t in zip(self.inputs, model.inputs))
        self.outputs = self._expand(model, 0, self.inputs)
        for key, t in zip(self.inputs + self.outputs, model.inputs + model.outputs):
            history = getattr(t, "_keras_history", None)
            self.names.setdefault(key, history.operation.name if history else t.name)
        self.producer, self.readers = {}, {}
        for call in self.calls:
            for key in call.outs:
                self.producer[key] = call
            for key in call.ins:
                self.readers.setdefault(key, []).append(call)

    def _key(self, scope, tensor):
        key = (scope, id(tensor))
        return self.alias.get(key, key)

    def _expand(self, model, scope, feeds):
        graph = model if hasattr(model, "_nodes_by_depth") else model._functional
        for tensor, key in zip(graph.inputs, feeds):
            self.alias[(scope, id(tensor))] = key
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                ins = [self._key(scope, t) for t in node.input_tensors]
                if (self.expand_nested and isinstance(node.operation, keras.Model)
                        and is_graph_model(node.operation)):
                    outs = self._expand(node.operation, next(self._scopes), ins)
                    for tensor, key in zip(node.outputs, outs):
                        self.alias[(scope, id(tensor))] = key
                else:
                    outs = [(scope, id(t)) for t in node.outputs]
                    self.shapes.update((key, tuple(t.shape)) for key, t in zip(outs, node.outputs))
                    self.calls.append(Call(node.operation, ins, outs))
        return [self._key(scope, t) for t in graph.outputs]

    def producers(self, call):
        """The calls whose outputs `call` reads."""
        return [self.producer[k] for k in call.ins if k in self.producer]

    def consumers(self, call):
        """The calls that read an output of `call`."""
        return [c for k in call.outs for c in self.readers.get(k, [])]

    def consumers_of_key(self, key):
        return list(self.readers.get(key, []))

    def consumers_of(self, op):
        """The ops that read an output of any call of `op` (each once)."""
        found, seen = [], set()
        for call in self.calls:
            if call.op is op:
                for consumer in self.consumers(call):
                    if id(consumer.op) not in seen:
                        seen.add(id(consumer.op))
                        found.append(consumer.op)
        return found

    def readers_of_input(self, tensor):
        """The ops that read the model input `tensor`."""
        key = self._key(0, tensor)
        return [call.op for call in self.readers.get(key, [])]

    def walk(self, sources, stop, step):
        """Walks from `sources` along `step` (consumers or producers) until `stop(call)`.

        Returns `(calls where it stopped, dead_end)`; `dead_end` is True when
        some path ran out of calls before reaching a stop.
        """
        todo, seen, found, dead_end = list(sources), set(sources), set(), not sources
        while todo:
            call = todo.pop()
            if stop(call):
                found.add(call)
                continue
            following = step(call)
            dead_end = dead_end or not following
            for nxt in following:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return found, dead_end
