"""What a TFLite flatbuffer computes in: every op with its dtypes, and the weights.

Read with the LiteRT interpreter (`ai_edge_litert`), with the default
delegates off so that XNNPACK does not fold the graph into one `DELEGATE`
pseudo-op. Each op gets a `kind` from the dtypes it works on:

- `"int8"` / `"int16"`: quantized activations (full-integer kernels);
- `"hybrid"`: float activations with int8 weights (dynamic-range kernels);
- `"float"`: float activations and float weights;
- `"convert"`: the QUANTIZE / DEQUANTIZE ops between the two worlds;
- `"int"`: index and shape arithmetic on int32/int64/bool tensors.
"""

import collections
import dataclasses

import numpy as np

COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
               "TRANSPOSE_CONV", "BATCH_MATMUL", "CONV_3D")


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One op of a flatbuffer: `name` (e.g. `"CONV_2D"`), `kind`, operand and result dtypes.

    Example:

    ```python
    from tfcompress.export.census import OpInfo
    op = OpInfo("FULLY_CONNECTED", "int8", ("int8", "int8", "int32"), ("int8",))
    ```
    """

    name: str
    kind: str
    inputs: tuple
    outputs: tuple

    def __str__(self):
        return f"{self.name}({', '.join(self.inputs)} -> {', '.join(self.outputs)})"


def interpreter(flatbuffer, **kwargs):
    """A LiteRT interpreter for `flatbuffer` (bytes).

    Example:

    ```python
    import keras
    from tfcompress import export
    flat = export.to_tflite(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    interp = export.census.interpreter(flat)
    ```
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading TFLite files needs the LiteRT runtime: "
            "`pip install ai-edge-litert`."
        ) from None
    return Interpreter(model_content=bytes(flatbuffer), **kwargs)


def ops(flatbuffer):
    """The ops of `flatbuffer`'s main graph, in execution order, as `OpInfo`.

    Example:

    ```python
    import keras
    from tfcompress import export
    flat = export.to_tflite(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    assert [op.name for op in export.census.ops(flat)] == ["FULLY_CONNECTED"]
    ```
    """
    interp = plain_interpreter(flatbuffer)
    found = []
    for op in interp._get_ops_details():
        ins = tuple(np.dtype(t).name for t in op["operand_types"])
        outs = tuple(np.dtype(t).name for t in op["result_types"])
        found.append(OpInfo(op["op_name"], _kind(op["op_name"], ins, outs), ins, outs))
    return found


def weights(flatbuffer):
    """`({dtype: number of stored weight values}, number of sparse-encoded tensors)`.

    Weights are the constant tensors the ops read (kernels, biases, tables).

    Example:

    ```python
    import keras
    from tfcompress import export
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])
    flat = export.to_tflite(model, mode="dynamic")
    counts, sparse = export.census.weights(flat)   # ({"int8": 2048, "float32": 32}, 0)
    ```
    """
    interp = plain_interpreter(flatbuffer)
    produced, consumed = set(), set()
    for op in interp._get_ops_details():
        produced.update(int(i) for i in op["outputs"])
        consumed.update(int(i) for i in op["inputs"] if i >= 0)
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    counts = collections.Counter()
    sparse = 0
    for index in sorted(consumed - produced - graph_inputs):
        detail = interp._get_tensor_details(index, 0)
        counts[np.dtype(detail["dtype"]).name] += int(np.prod(detail["shape"]))
        sparse += bool(detail.get("sparsity_parameters"))
    return dict(counts), sparse


def table_bytes(flatbuffer):
    """Bytes of the constant tensors that `flatbuffer`'s GATHER ops read: its lookup tables.

    That is the embedding tables as the file stores them, with whatever a
    lookup reads beside them (per-row scale codes, id maps).

    Example:

    ```python
    import keras
    from tfcompress import export
    ids = keras.Input((), dtype="int32")
    model = keras.Model(ids, keras.layers.Embedding(1000, 8)(ids))
    assert export.census.table_bytes(export.to_tflite(model)) == 1000 * 8 * 4
    ```
    """
    interp = plain_interpreter(flatbuffer)
    produced = {int(i) for op in interp._get_ops_details() for i in op["outputs"]}
    read = {int(op["inputs"][0]) for op in interp._get_ops_details()
            if op["op_name"] == "GATHER"} - produced
    return sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
               for d in (interp._get_tensor_details(i, 0) for i in sorted(read)))


def plain_interpreter(flatbuffer):
    """A LiteRT interpreter for `flatbuffer` with the default delegates (XNNPACK) off."""
    from ai_edge_litert.interpreter import OpResolverType

    return interpreter(
        flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )


def _kind(name, ins, outs):
    if name in ("QUANTIZE", "DEQUANTIZE"):
        return "convert"
    activations = ins[:1] + outs
    if any(t.startswith(("float", "bfloat")) for t in activations):
        return "hybrid" if any(t in ("int8", "int4", "uint8") for t in ins[1:]) else "float"
    if "int16" in activations:
        return "int16"
    if "int8" in activations or "uint8" in activations:
        return "int8"
    return "int"
