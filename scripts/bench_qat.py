"""Benchmark: tfcompress quantization-aware training (Keras 3) against TFMOT (tf_keras).

What it measures
----------------
One CNN with a BatchNormalization to fold (`tfcompress.examples.digits_cnn()`:
Conv2D(16, no bias) -> BN -> ReLU -> Conv2D(32) -> MaxPool -> DepthwiseConv2D
-> Conv2D(32, 1x1) -> Flatten -> Dense(64) -> Dense(10) logits) is trained in
float once, in Keras 3 (Adam 3e-3, batch 32), on the scikit-learn digits
split (70/15/15). Both frameworks start from those same float weights:

- tfcompress: `tfcompress.quantization.quantize_model` on the Keras 3 model;
- TFMOT: `tfmot.quantization.keras.quantize_model` on a tf_keras twin (built
  layer by layer, the weights copied with `set_weights`).

Each QAT model is fine-tuned for a few epochs (Adam 3e-4, batch 32, the same
batch order in both frameworks) and converted with `tf.lite.TFLiteConverter`
and `Optimize.DEFAULT`, without a representative dataset (tfcompress through
`tfcompress.export.to_tflite(qat, mode="int8")`, TFMOT through
`TFLiteConverter.from_keras_model`). The float model is converted too, without
optimizations. Reported, per framework:

1. Accuracy on the 270 test images: the float Keras model, the QAT Keras model
   (fake-quant), the float TFLite model and the int8 TFLite model, the TFLite
   ones run by LiteRT at batch 1.
2. Training cost of QAT: after the conversion, epochs of `fit` (same batch
   size, same batches) on the fine-tuned QAT model and on the float model,
   interleaved, after one warm-up epoch each; the minimum epoch time over the
   timed epochs (3 unless `--timed-epochs`) and the ratio QAT/float, plus the
   median of the per-round ratios and the ratio of minimum process CPU times,
   which move less with other load on a shared machine. Keras 3 is compiled
   with `jit_compile=False`, as tf_keras runs (no XLA).
3. The flatbuffers: bytes of int8 and float (and the ratio), with a breakdown
   (int8 weights, int32 biases, everything else; size once the strings are
   stripped), LiteRT batch-1 latency (median `invoke`, `num_threads=1`, with
   the default XNNPACK delegate as deployed, and with the builtin kernels
   alone), the int8 op list, and the ops that compute in float32 between the
   first QUANTIZE and the last DEQUANTIZE (the int32 shape ops SHAPE /
   STRIDED_SLICE / PACK aside).
4. Bytes and latency of a larger variant too (full run only): the same
   layers, 4x wider, on 32x32 inputs (the digits upsampled), random weights,
   QAT ranges from a few training-mode forward passes. At 8x8 a batch-1
   `invoke` takes tens of microseconds, mostly fixed per-op cost, and the
   file is small enough for the fixed flatbuffer overhead to matter.

Each framework runs in its own subprocess (`--worker NAME --inputs DIR`):
importing `tensorflow_model_optimization` sets `TF_USE_LEGACY_KERAS=1` for the
whole process, which breaks Keras 3. The parent prepares the data and the
trained float weights (Keras 3) in an `.npz`; each worker writes its results
as JSON and its flatbuffers as `.tflite` files; the parent runs all the
flatbuffers in LiteRT itself (one process, latency rounds interleaved).

How to run
----------
From the repository root (needs tensorflow, keras 3, tf_keras,
tensorflow-model-optimization, scikit-learn and ai-edge-litert)::

    python scripts/bench_qat.py            # full run, about 2.5 minutes on 2 cores
    python scripts/bench_qat.py --quick    # smoke run, ~75 s (few epochs, no 32x32 variant)
    python scripts/bench_qat.py --out results.json --timed-epochs 10

It prints markdown tables and one PASS/FAIL line per target for tfcompress:
int8 accuracy >= TFMOT's and within 0.5 points of the float accuracy;
QAT/float step-time ratio <= TFMOT's; int8 bytes <= 0.27 x float bytes; int8
latency <= 0.6 x float latency (XNNPACK); no float compute in the int8 graph.
Lines marked "extra" check bytes and latency on the 32x32 variant and with
the builtin kernels.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import (BATCH_SIZE, REPO_ROOT, epoch_timer, load_inputs, log, run_worker_process,
                      save_inputs, steps_per_epoch, top1_accuracy, train_dataset)

FRAMEWORKS = ("tfcompress", "tfmot")
SEED = 0
FLOAT_LR = 3e-3
QAT_LR = 3e-4
SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")
TARGETS = {"accuracy_drop_points": 0.5, "bytes_ratio": 0.27, "latency_ratio": 0.6}
RUNTIMES = ("xnnpack", "builtin")
# The trained digits CNN, and the bytes/latency-only variant (32x32 inputs, 4x wider).
VARIANTS = {"8x8": {"side": 8, "width": 16}, "32x32": {"side": 32, "width": 64}}

CONFIGS = {
    "full": {"float_epochs": 15, "qat_epochs": 4, "timed_epochs": 3, "variants": ["8x8", "32x32"],
             "calibration_batches": 4, "latency_rounds": 25, "latency_round_s": 0.04},
    "quick": {"float_epochs": 2, "qat_epochs": 1, "timed_epochs": 1, "variants": ["8x8"],
              "calibration_batches": 1, "latency_rounds": 3, "latency_round_s": 0.01},
}

# ---------------------------------------------------------------------------
# Shared by the parent and both workers. `keras` is Keras 3 or tf_keras.
# ---------------------------------------------------------------------------
def build_cnn(keras, side=8, width=16):
    """The digits CNN, layer for layer as `tfcompress.examples.digits_cnn(width)`.

    Written once for either Keras, so the tf_keras twin has the same layers
    and the same weight order; `side` only changes the input size.
    """
    L = keras.layers
    inputs = keras.Input((side, side, 1), name="image")
    x = L.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = L.MaxPooling2D()(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.Conv2D(2 * width, 1, activation="relu")(x)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu")(x)
    outputs = L.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def upsample(x, side):
    """Digits (n, 8, 8, 1) blown up to (n, side, side, 1) by pixel repetition."""
    factor = side // x.shape[1]
    return np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)


# ---------------------------------------------------------------------------
# Workers: what differs between the frameworks, then the shared protocol.
# ---------------------------------------------------------------------------
class Framework:
    """One framework: its Keras, its `quantize_model` and its TFLite conversion."""

    def __init__(self, name, tf, keras, quantize_model, compile_kwargs):
        self.name, self.tf, self.keras = name, tf, keras
        self.quantize_model = quantize_model
        self.compile_kwargs = compile_kwargs

    def compile(self, model, learning_rate):
        model.compile(optimizer=self.keras.optimizers.Adam(learning_rate),
                      loss=self.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      **self.compile_kwargs)
        return model

    def fit(self, model, dataset, spe, epochs):
        """Trains `epochs` epochs of `spe` steps; returns the epoch times (wall, cpu)."""
        timer = epoch_timer(self.keras)
        model.fit(dataset, epochs=epochs, steps_per_epoch=spe, verbose=0, callbacks=[timer])
        return timer.times

    def tflite_int8(self, qat):
        raise NotImplementedError

    def tflite_float(self, model):
        raise NotImplementedError


class Tfcompress(Framework):
    def __init__(self):
        sys.path.insert(0, str(REPO_ROOT))
        import keras
        import tensorflow as tf

        import tfcompress

        self.export = tfcompress.export
        # tf_keras never uses XLA by default; Keras 3's "auto" would on a GPU.
        super().__init__("tfcompress", tf, keras, tfcompress.quantization.quantize_model,
                         {"jit_compile": False})

    def tflite_int8(self, qat):
        return self.export.to_tflite(qat, mode="int8")

    def tflite_float(self, model):
        return self.export.to_tflite(model, mode="float")


class Tfmot(Framework):
    def __init__(self):
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras  # after tfmot, which selects the legacy Keras

        super().__init__("tfmot", tf, tf_keras, tfmot.quantization.keras.quantize_model, {})

    def _convert(self, model, optimize):
        converter = self.tf.lite.TFLiteConverter.from_keras_model(model)
        if optimize:
            converter.optimizations = [self.tf.lite.Optimize.DEFAULT]
        return converter.convert()

    def tflite_int8(self, qat):
        return self._convert(qat, optimize=True)

    def tflite_float(self, model):
        return self._convert(model, optimize=False)


def time_epochs(fw, models, dataset, spe, timed_epochs):
    """Epoch times of `fit` for {"float": model, "qat": model}, interleaved.

    The first round is a warm-up (it traces the train functions) and is not
    counted.
    """
    times = {kind: {"wall": [], "cpu": []} for kind in models}
    for _ in range(1 + timed_epochs):
        for kind, model in models.items():
            epoch = fw.fit(model, dataset, spe, 1)
            for clock in ("wall", "cpu"):
                times[kind][clock] += epoch[clock]
    timed = {k: {c: np.array(v[c][1:]) for c in v} for k, v in times.items()}
    result = {"float_s": timed["float"]["wall"].min(), "qat_s": timed["qat"]["wall"].min(),
              "paired_median_ratio": np.median(timed["qat"]["wall"] / timed["float"]["wall"]),
              "cpu_ratio": timed["qat"]["cpu"].min() / timed["float"]["cpu"].min()}
    result["ratio"] = result["qat_s"] / result["float_s"]
    result = {k: float(v) for k, v in result.items()}
    log(fw.name, f"epoch times: {result}")
    return {**result, "epoch_times": times}


def untrained_variant(fw, x, shape, batches):
    """A randomly initialized CNN of `shape`, as (int8 QAT, float) flatbuffers.

    For bytes and latency only: the QAT ranges come from `batches` forward
    passes in training mode over 32 (upsampled) digits each, no training.
    """
    fw.tf.random.set_seed(SEED)
    model = build_cnn(fw.keras, **shape)
    qat = fw.quantize_model(model)
    x = upsample(x, shape["side"])
    for i in range(batches):
        qat(x[i * BATCH_SIZE:(i + 1) * BATCH_SIZE], training=True)
    return fw.tflite_int8(qat), fw.tflite_float(model)


def run_protocol(fw, inputs, config, out_dir):
    """QAT fine-tune from the shared float weights, convert, time; write the flatbuffers."""
    (x, y, x_test, y_test), weights = inputs
    spe = steps_per_epoch(len(x))
    dataset = train_dataset(fw.tf, x, y, config["qat_epochs"], SEED)

    model = build_cnn(fw.keras)
    model.set_weights(weights)
    result = {"framework": fw.name, "float_keras_accuracy": top1_accuracy(model, x_test, y_test)}
    qat = fw.compile(fw.quantize_model(model), QAT_LR)
    start = time.perf_counter()
    fw.fit(qat, dataset, spe, config["qat_epochs"])
    result["qat_fit_s"] = time.perf_counter() - start
    result["qat_keras_accuracy"] = top1_accuracy(qat, x_test, y_test)
    log(fw.name, f"accuracies: {result}")

    flatbuffers = {("8x8", "int8"): fw.tflite_int8(qat), ("8x8", "float"): fw.tflite_float(model)}
    log(fw.name, "converted")
    # Timing last: it trains both models further.
    models = {"float": fw.compile(model, QAT_LR), "qat": qat}
    result["timing"] = time_epochs(fw, models, dataset, spe, config["timed_epochs"])
    for variant in config["variants"][1:]:
        pair = untrained_variant(fw, x, VARIANTS[variant], config["calibration_batches"])
        flatbuffers.update({(variant, "int8"): pair[0], (variant, "float"): pair[1]})
        log(fw.name, f"{variant} variant converted")
    for (variant, kind), flat in flatbuffers.items():
        (out_dir / tflite_name(fw.name, variant, kind)).write_bytes(flat)
    result["versions"] = {"tensorflow": fw.tf.__version__, "keras": fw.keras.__version__}
    return result


def tflite_name(framework, variant, kind):
    return f"{framework}_{variant}_{kind}.tflite"


def run_worker(name, inputs_dir, config):
    fw = {"tfcompress": Tfcompress, "tfmot": Tfmot}[name]()
    fw.tf.random.set_seed(SEED)
    result = run_protocol(fw, load_inputs(inputs_dir, "x_train", "y_train", "x_test", "y_test"),
                          config, inputs_dir)
    (inputs_dir / f"{name}.json").write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------
# LiteRT: accuracy, latency, op census, size breakdown (run in the parent).
# ---------------------------------------------------------------------------
def litert(flat, builtin_only=False):
    """A one-thread LiteRT interpreter at batch 1; `builtin_only` turns XNNPACK off."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"experimental_op_resolver_type":
              OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if builtin_only else {}
    interp = Interpreter(model_content=flat, num_threads=1, **kwargs)
    detail = interp.get_input_details()[0]
    if list(detail["shape"][:1]) != [1]:
        interp.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
    interp.allocate_tensors()
    return interp


def litert_accuracy(flat, x, y):
    """Test accuracy, one image per `invoke` (float inputs and outputs)."""
    interp = litert(flat)
    [inp], [out] = interp.get_input_details(), interp.get_output_details()
    assert inp["dtype"] == np.float32 and out["dtype"] == np.float32, (inp, out)
    predictions = []
    for image in x:
        interp.set_tensor(inp["index"], image[None])
        interp.invoke()
        predictions.append(int(np.argmax(interp.get_tensor(out["index"]))))
    return float(np.mean(np.array(predictions) == y))


def latency_ms(flats, samples, rounds, round_s, builtin_only=False):
    """{key: median batch-1 `invoke` time in ms} for {key: flatbuffer}.

    Every flatbuffer gets its own interpreter, fed `samples[key]`. Many short
    rounds visit them in turn, so load that comes and goes hits all alike. In
    each round a flatbuffer is invoked a few times untimed, then timed invoke
    by invoke for about `round_s` seconds (10 to 2000 invokes).
    """
    interps, counts = {}, {}
    for key, flat in flats.items():
        interp = litert(flat, builtin_only)
        interp.set_tensor(interp.get_input_details()[0]["index"], samples[key])
        start = time.perf_counter()
        for _ in range(5):
            interp.invoke()
        counts[key] = int(np.clip(round_s / ((time.perf_counter() - start) / 5), 10, 2000))
        interps[key] = interp
    times = {key: [] for key in flats}
    for _ in range(rounds):
        for key, interp in interps.items():
            for _ in range(5):
                interp.invoke()
            for _ in range(counts[key]):
                start = time.perf_counter_ns()
                interp.invoke()
                times[key].append(time.perf_counter_ns() - start)
    return {key: float(np.median(v)) / 1e6 for key, v in times.items()}


def op_census(flat):
    """[(op name, input dtypes, output dtypes)] in execution order, no delegate."""
    interp = litert(flat, builtin_only=True)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}

    def dtypes(indices):
        return [np.dtype(tensors[i]["dtype"]).name for i in indices if i >= 0]

    return [(op["op_name"], dtypes(op["inputs"]), dtypes(op["outputs"]))
            for op in interp._get_ops_details()]


def describe(op):
    name, inputs, outputs = op
    return f"{name}({','.join(inputs)}->{','.join(outputs)})"


def float_islands(census):
    """Ops with a float32 tensor between the first QUANTIZE and the last DEQUANTIZE."""
    names = [name for name, _, _ in census]
    first = names.index("QUANTIZE") + 1 if "QUANTIZE" in names else 0
    last = len(names) - 1 - names[::-1].index("DEQUANTIZE") if "DEQUANTIZE" in names else len(names)
    return [describe(op) for op in census[first:last]
            if op[0] not in SHAPE_OPS and "float32" in op[1] + op[2]]


def size_breakdown(flat):
    """Bytes of the constant tensors by dtype; "rest" is the flatbuffer's own.

    The rest holds the graph, the tensor names, the quantization parameters
    (a float32 scale and an int64 zero point per channel), the signature and
    the metadata (runtime version, conversion options).
    """
    interp = litert(flat, builtin_only=True)
    produced, consumed = set(), set()
    for op in interp._get_ops_details():
        produced.update(int(i) for i in op["outputs"])
        consumed.update(int(i) for i in op["inputs"] if i >= 0)
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    constants = {}
    for index in sorted(consumed - produced - graph_inputs):
        dtype = np.dtype(tensors[index]["dtype"])
        size = int(np.prod(tensors[index]["shape"])) * dtype.itemsize
        constants[dtype.name] = constants.get(dtype.name, 0) + size
    scales = sum(len(t["quantization_parameters"]["scales"]) for t in tensors.values())
    return {"total": len(flat), "constants": constants,
            "rest": len(flat) - sum(constants.values()), "quantization_scales": scales,
            "without_strings": stripped_bytes(flat)}


def stripped_bytes(flat):
    """Bytes once tensor names, descriptions and signatures are removed.

    `flatbuffer_utils.strip_strings` is TFLite's own tool for this; the result
    still runs, but without a signature (inputs and outputs by index only).
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flat))
    flatbuffer_utils.strip_strings(model)
    return len(flatbuffer_utils.convert_object_to_bytearray(model))


def evaluate_flatbuffers(out_dir, test, config):
    """Everything measured in LiteRT, for both frameworks, into their result dicts."""
    x_test, y_test = test
    keys = [(n, v, k) for n in FRAMEWORKS for v in config["variants"] for k in ("int8", "float")]
    flats = {key: (out_dir / tflite_name(*key)).read_bytes() for key in keys}
    samples = {key: upsample(x_test[:1], VARIANTS[key[1]]["side"]) for key in keys}
    latency = {runtime: latency_ms(flats, samples, config["latency_rounds"],
                                   config["latency_round_s"], builtin_only=runtime == "builtin")
               for runtime in RUNTIMES}
    results = {}
    for name in FRAMEWORKS:
        census = op_census(flats[name, "8x8", "int8"])
        row = {
            "int8_accuracy": litert_accuracy(flats[name, "8x8", "int8"], x_test, y_test),
            "float_tflite_accuracy": litert_accuracy(flats[name, "8x8", "float"], x_test, y_test),
            "bytes": {v: {k: len(flats[name, v, k]) for k in ("int8", "float")}
                      for v in config["variants"]},
            "latency_ms": {rt: {v: {k: latency[rt][name, v, k] for k in ("int8", "float")}
                                for v in config["variants"]} for rt in RUNTIMES},
            "int8_ops": [describe(op) for op in census],
            "float_islands": {v: float_islands(op_census(flats[name, v, "int8"]))
                              for v in config["variants"]},
            "size_breakdown": {k: size_breakdown(flats[name, "8x8", k]) for k in ("int8", "float")},
        }
        results[name] = row
        log(name, f"LiteRT: int8 accuracy {row['int8_accuracy']:.4f}, bytes {row['bytes']}, "
                  f"latency {row['latency_ms']}")
    return results


# ---------------------------------------------------------------------------
# Parent: inputs, workers, targets, report.
# ---------------------------------------------------------------------------
def prepare_inputs(inputs_dir, config):
    """Digits split and float weights trained once in Keras 3, saved for both workers."""
    sys.path.insert(0, str(REPO_ROOT))
    import keras
    import tensorflow as tf

    from tfcompress import examples

    (x, y), _, (x_test, y_test) = examples.digits(seed=SEED)
    keras.utils.set_random_seed(SEED)
    model = examples.digits_cnn()
    assert ([w.shape for w in model.get_weights()]
            == [w.shape for w in build_cnn(keras).get_weights()]), "build_cnn != digits_cnn"
    model.compile(optimizer=keras.optimizers.Adam(FLOAT_LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    model.fit(train_dataset(tf, x, y, config["float_epochs"], SEED), epochs=config["float_epochs"],
              steps_per_epoch=steps_per_epoch(len(x)), verbose=0)
    log("parent", f"float model trained, test accuracy {top1_accuracy(model, x_test, y_test):.4f}")
    weights = model.get_weights()
    save_inputs(inputs_dir, weights, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    return x_test, y_test


def ratio_check(label, pair, limit, unit=""):
    """(label, (passed, detail)) for pair = (int8 value, float value) <= limit."""
    scale = 1e3 if unit == "us" else 1  # latencies are stored in ms
    ratio = pair[0] / pair[1]
    detail = f"{pair[0] * scale:.{1 if unit else 0}f} / {pair[1] * scale:.{1 if unit else 0}f}"
    return label, (ratio <= limit, f"{detail}{' ' + unit if unit else ''} = {ratio:.3f}")


def check_targets(results, variants):
    """{target: (passed, detail)} for tfcompress; "extra" lines are supplementary."""
    ours, theirs = results["tfcompress"], results["tfmot"]
    drop = 100 * (ours["float_keras_accuracy"] - ours["int8_accuracy"])
    step, step_tfmot = ours["timing"], theirs["timing"]
    checks = dict([
        ("int8 accuracy >= TFMOT int8 accuracy", (
            ours["int8_accuracy"] >= theirs["int8_accuracy"],
            f"{ours['int8_accuracy']:.4f} vs {theirs['int8_accuracy']:.4f}")),
        (f"int8 accuracy within {TARGETS['accuracy_drop_points']} points of float accuracy", (
            drop <= TARGETS["accuracy_drop_points"] + 1e-9,
            f"float {ours['float_keras_accuracy']:.4f}, int8 {ours['int8_accuracy']:.4f}, "
            f"drop {drop:+.2f} points")),
        ("QAT/float step-time ratio <= TFMOT's", (
            step["ratio"] <= step_tfmot["ratio"],
            f"{step['ratio']:.3f} vs {step_tfmot['ratio']:.3f}; CPU-time ratios "
            f"{step['cpu_ratio']:.3f} vs {step_tfmot['cpu_ratio']:.3f}")),
    ])
    for variant in variants:
        extra = "" if variant == "8x8" else f"(extra, {variant} variant) "
        size = ours["bytes"][variant]
        checks.update([ratio_check(f"{extra}int8 bytes <= {TARGETS['bytes_ratio']} x float bytes",
                                   (size["int8"], size["float"]), TARGETS["bytes_ratio"])])
        for runtime in RUNTIMES:
            lat = ours["latency_ms"][runtime][variant]
            label = (f"{extra or ('(extra) ' if runtime == 'builtin' else '')}int8 latency <= "
                     f"{TARGETS['latency_ratio']} x float latency, {runtime}")
            checks.update([ratio_check(label, (lat["int8"], lat["float"]),
                                       TARGETS["latency_ratio"], "us")])
    islands = ours["float_islands"]
    checks["int8 graph has no float32 compute between QUANTIZE and DEQUANTIZE"] = (
        not any(islands.values()),
        "; ".join(f"{v}: {len(ops)} float ops {ops or ''}".strip() for v, ops in islands.items()))
    return checks


def cpu_note():
    """The CPU, and whether it has int8 dot-product instructions (VNNI / AMX)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "CPU: unknown."

    def field(key):
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "")

    flags = set(field("flags").split())
    dot = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) or "none"
    return (f"CPU: {field('model name') or 'unknown'}, {os.cpu_count()} cores; AVX-512: "
            f"{'avx512f' in flags}; int8 dot-product instructions (VNNI/AMX): {dot}.")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_table(r):
    return table(
        ["framework", "float Keras", "QAT Keras (fake-quant)", "float TFLite", "int8 TFLite",
         "int8 TFLite - float Keras (points)"],
        [(n, f"{r[n]['float_keras_accuracy']:.4f}", f"{r[n]['qat_keras_accuracy']:.4f}",
          f"{r[n]['float_tflite_accuracy']:.4f}", f"{r[n]['int8_accuracy']:.4f}",
          f"{100 * (r[n]['int8_accuracy'] - r[n]['float_keras_accuracy']):+.2f}")
         for n in FRAMEWORKS])


def timing_table(r):
    return table(
        ["framework", "float epoch (s)", "QAT epoch (s)", "ratio QAT/float",
         "median of paired ratios", "CPU-time ratio"],
        [(n, f"{t['float_s']:.4f}", f"{t['qat_s']:.4f}", f"{t['ratio']:.3f}",
          f"{t['paired_median_ratio']:.3f}", f"{t['cpu_ratio']:.3f}")
         for n, t in ((n, r[n]["timing"]) for n in FRAMEWORKS)])


def deployment_table(r, variants):
    rows = []
    for n in FRAMEWORKS:
        for v in variants:
            b = r[n]["bytes"][v]
            row = [n, f"{v}, width {VARIANTS[v]['width']}", b["int8"], b["float"],
                   f"{b['int8'] / b['float']:.3f}"]
            for runtime in RUNTIMES:
                lat = r[n]["latency_ms"][runtime][v]
                row += [f"{lat['int8'] * 1e3:.1f}", f"{lat['float'] * 1e3:.1f}",
                        f"{lat['int8'] / lat['float']:.3f}"]
            rows.append(row)
    return table(["framework", "model", "int8 bytes", "float bytes", "bytes ratio",
                  "int8 us (XNNPACK)", "float us (XNNPACK)", "ratio", "int8 us (builtin)",
                  "float us (builtin)", "ratio"], rows)


def contents_table(r):
    rows = []
    for n in FRAMEWORKS:
        sizes = r[n]["size_breakdown"]
        for kind, s in sizes.items():
            rows.append([n, kind, s["total"], s["constants"].get("int8", 0),
                         s["constants"].get("int32", 0), s["constants"].get("float32", 0),
                         s["rest"], s["quantization_scales"], s["without_strings"]])
        ratio = sizes["int8"]["without_strings"] / sizes["float"]["without_strings"]
        rows.append([n, "int8 / float", "", "", "", "", "", "", f"{ratio:.3f}"])
    return table(["framework", "file", "total", "int8 constants", "int32 constants",
                  "float32 constants", "rest (graph, names, quant params, signature, metadata)",
                  "quantization scales", "total without strings"], rows)


def report(results, checks, config, mode):
    r, variants = results, config["variants"]
    print(f"## QAT benchmark ({mode}: {config}, batch {BATCH_SIZE}, seed {SEED})\n")
    print("### Accuracy (270 test images; TFLite run by LiteRT at batch 1)\n")
    print(accuracy_table(r) + "\n")
    print(f"### Training step time (one epoch of fit, min over {config['timed_epochs']} "
          "timed epochs after a warm-up, float and QAT interleaved)\n")
    print(timing_table(r) + "\n")
    print("### TFLite bytes and LiteRT batch-1 latency (median invoke, 1 thread; XNNPACK = "
          "the default delegate, builtin = without it)\n")
    print(deployment_table(r, variants) + "\n")
    print("### What the 8x8 flatbuffers hold (bytes)\n")
    print(contents_table(r) + "\n")
    print("### 8x8 int8 graphs (op(inputs->outputs), no delegate)\n")
    for n in FRAMEWORKS:
        print(f"- {n}: {' '.join(r[n]['int8_ops'])}")
        print("  - float32 ops between first QUANTIZE and last DEQUANTIZE: "
              f"{r[n]['float_islands']['8x8'] or 'none'}")
    print(f"\n{cpu_note()}")
    print("\n### Targets (tfcompress)\n")
    for name, (ok, detail) in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name} ({detail})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few epochs: a smoke run")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--timed-epochs", type=int,
                        help="timed epochs per model for the step-time ratio (default 3)")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    config = dict(CONFIGS[mode])
    if args.timed_epochs:
        config["timed_epochs"] = args.timed_epochs

    if args.worker:
        run_worker(args.worker, args.inputs, config)
        return

    start, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_qat_") as tmp:
        inputs_dir = Path(tmp)
        test = prepare_inputs(inputs_dir, config)
        worker_args = ["--timed-epochs", str(config["timed_epochs"])] + (
            ["--quick"] if args.quick else [])
        results = {name: run_worker_process(__file__, name, inputs_dir, *worker_args)
                   for name in FRAMEWORKS}
        for name, measured in evaluate_flatbuffers(inputs_dir, test, config).items():
            results[name].update(measured)
    elapsed, load_after = time.perf_counter() - start, os.getloadavg()
    checks = check_targets(results, config["variants"])

    report(results, checks, config, mode)
    print(f"\nLoad average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
          f"on {os.cpu_count()} CPUs. Total wall time: {elapsed:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(
            {"config": config, "mode": mode, "batch_size": BATCH_SIZE, "seed": SEED,
             "results": results,
             "targets": {k: {"passed": ok, "detail": d} for k, (ok, d) in checks.items()},
             "wall_time_s": elapsed,
             "load_average": {"before": load_before, "after": load_after}}, indent=2))


if __name__ == "__main__":
    main()
