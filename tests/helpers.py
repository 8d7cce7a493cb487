"""Small shared helpers for the tests (no mocks: real Keras models)."""

import keras
import numpy as np

import tfcompress as tfc


def expected_sparsity(schedule, step):
    """Sparsity the masks must have after `step` steps: the schedule's value at
    the last update step <= step (0.0 before the first update)."""
    for s in range(step, 0, -1):
        should, sparsity = schedule(s)
        if bool(should):
            return float(sparsity)
    return 0.0


def expected_zeros(size, sparsity):
    keep = max(int(np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))), 1)
    return size - keep


def mask_zeros(model):
    """{mask path: number of zeros} for every pruning mask in `model`."""
    out = {}
    for wrapper in tfc.core.find(model, tfc.pruning.PruneLowMagnitude):
        for mask in wrapper.masks:
            value = np.asarray(mask)
            out[mask.path] = int(value.size - value.sum())
    return out


def mlp(inputs=16, hidden=32, outputs=4):
    return keras.Sequential([
        keras.Input((inputs,)),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(outputs),
    ])


def regression_data(n=256, inputs=16, outputs=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    w = rng.normal(size=(inputs, outputs)).astype("float32")
    return x, x @ w


class Recorder(keras.callbacks.Callback):
    """Records (optimizer step, zeros per mask) at every batch end."""

    def __init__(self):
        super().__init__()
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        step = int(np.asarray(self.model.optimizer.iterations))
        self.records.append((step, mask_zeros(self.model)))


def tflite_bytes(model, int8_io=False):
    """Converts a Keras 3 model the way an app would: SavedModel → TFLiteConverter, DEFAULT."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        specs = [tf.TensorSpec(x.shape, x.dtype, name=x.name) for x in model.inputs]
        if isinstance(model._inputs_struct, dict):
            specs = [{x.name: tf.TensorSpec(x.shape, x.dtype, name=x.name) for x in model.inputs}]
        archive.add_endpoint("serve", lambda *args: model(*args, training=False), input_signature=specs)
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()


def interpreter(content):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=content,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def op_census(content):
    """[(op name, [input dtypes], [output dtypes])] in execution order."""
    it = interpreter(content)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    return [(op["op_name"], [tensors[i]["dtype"].__name__ for i in op["inputs"] if i >= 0],
             [tensors[i]["dtype"].__name__ for i in op["outputs"]])
            for op in it._get_ops_details()]


SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}  # int32 shape arithmetic for dynamic batch


def float_compute(census):
    """Ops computing in float between the first QUANTIZE and the last DEQUANTIZE."""
    names = [name for name, _, _ in census]
    first = names.index("QUANTIZE") + 1 if "QUANTIZE" in names else 0
    last = len(names) - 1 - names[::-1].index("DEQUANTIZE") if "DEQUANTIZE" in names else len(names)
    return [op for op in census[first:last]
            if op[0] not in SHAPE_OPS and "float32" in op[1] + op[2]]


def run_tflite(content, inputs):
    """Runs a TFLite model one example at a time (batch 1) on a dict or array."""
    it = interpreter(content)
    details = it.get_input_details()
    out_detail = it.get_output_details()[0]
    n = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    outputs = []
    for i in range(n):
        for d in details:
            name = d["name"].split(":")[0]
            if isinstance(inputs, dict):
                value = inputs[next(k for k in inputs if k in name)][i:i + 1]
            else:
                value = inputs[i:i + 1]
            if d["dtype"] == np.int8 and value.dtype != np.int8:
                scale, zero = d["quantization"]
                value = np.clip(np.round(value / scale + zero), -128, 127)
            it.set_tensor(d["index"], value.astype(d["dtype"]))
        it.invoke()
        out = it.get_tensor(out_detail["index"])
        if out_detail["dtype"] == np.int8:
            scale, zero = out_detail["quantization"]
            out = (out.astype("float32") - zero) * scale
        outputs.append(out[0])
    return np.stack(outputs)
