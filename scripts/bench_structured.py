"""Benchmark: structured (filter) pruning + shrink against magnitude pruning, on LiteRT.

What it measures
----------------
Whether removing whole channels (`tfcompress.pruning.prune_filters` then
`tfcompress.shrink`) buys real batch-1 latency on a CPU runtime, and what it
costs in accuracy, next to unstructured magnitude pruning at the same number
of non-zero parameters (which keeps every shape, so it should not be faster).

Data: scikit-learn's digits (`tfcompress.examples.digits(seed=0)`, 70/15/15
split), each 8x8 image upsampled to 32x32 (`np.repeat`, 4x per axis) and
repeated over 3 channels, so the models are applications-sized.

Models (both functional, Keras 3, random init: no downloads):

1. `cnn`: a VGG/ResNet-ish CNN, Conv-BN-ReLU blocks of width 32 (32x32),
   64 (16x16, with one residual basic block whose `Add` couples three
   convs) and 128 (8x8), global average pooling, Dense 10. 48 M MACs, dominated
   by the convolutions: batch-1 latency ~0.4 ms float with XNNPack (AVX-512
   x86), ~2.4 ms with the builtin kernels, on the machine it was written on.
2. `mobilenetv2`: `keras.applications.MobileNetV2(weights=None,
   input_shape=(32, 32, 3), classes=10, alpha=0.35,
   classifier_activation=None)`. At 32x32 it is tiny (a few M MACs), so
   its latency is dominated by per-op overhead, not arithmetic; it shows
   how far channel pruning helps on such a model. Its ~150 wrapped layers make
   every fit start slowly (~30 s on 2 cores), so it runs only with `--full`
   (or `--models mobilenetv2`), which adds roughly 10 minutes.

Protocol per model (Adam, batch 32, seed 0, one process):

- dense: trained `dense_epochs` from scratch (lr 2e-3).
- `filters`: for each filter fraction f in 25/50/75 %, `prune_filters` on a
  copy of the trained dense model (criterion "l2"), with
  `PolynomialDecay(0 -> f, begin_step=0, end_step ~60% of the fine-tuning
  steps, frequency = steps_per_epoch // 4)`, fine-tuned `finetune_epochs`
  (lr 1e-3) with `UpdatePruningStep`, then `shrink`, then the BatchNorm
  moving statistics are re-estimated (`recalibrate_bn`: 50 training batches
  in training mode, momentum 0.9, no weight updated; the masks move until
  the schedule ends, so the statistics lag; the `BN recal gain` column is
  the test accuracy it adds; the dense model gets it too). With `distil` on
  (default: on for the cnn, see `CONFIGS`), the fine-tuning is done by a
  `tfcompress.distillation.Distiller` from the dense model
  (`LogitsDistillation(T=4)`, `student_loss_weight=0.5`).
- `magnitude`: `prune_low_magnitude` on a copy of the dense model, its
  sparsity s chosen so that the stripped model has as many non-zero
  parameters as the shrunk one (s = removed parameters / prunable kernel
  parameters; BatchNorm and biases are not pruned), `ConstantSparsity(s,
  0, frequency = steps_per_epoch // 4)`, fine-tuned the same number of
  epochs, `tfcompress.strip`, the same BatchNorm recalibration.

Reported per row: parameters (non-zero, so magnitude pruning's zeros do not
count), MMACs (analytic: per Conv2D / DepthwiseConv2D / Dense of the model
at its real shapes; magnitude pruning keeps the dense shapes, so its MACs
are the dense ones), float and int8 TFLite bytes
(`tfcompress.export.to_tflite`, int8 calibrated on 200 training images,
float inputs/outputs), gzip'd float bytes (where the zeros of magnitude
pruning pay off), LiteRT batch-1 latency as a ratio to the dense model's:
float with XNNPack (1 thread), float with the builtin kernels (no
XNNPack), int8 with XNNPack; and the test accuracy of the Keras model and
of the int8 TFLite. Latency: median of up to `LATENCY_RUNS` `invoke()`s
after warm-up, the rounds over a model's flatbuffers interleaved
`LATENCY_ROUNDS` times and the minimum over rounds kept (the machine is
shared; absolute ms are printed for the dense model).

Targets (checked on the cnn; the MobileNetV2 lines are informative):

- 50% filters -> float latency <= 0.6x dense (XNNPack, 1 thread);
- the shrunk models' Keras test accuracy within 1 point of dense after
  fine-tuning (checked at 50%; 25% and 75% are reported).

How to run
----------
From the repository root::

    python scripts/bench_structured.py           # the cnn: about 5 minutes on 2 cores
    python scripts/bench_structured.py --quick   # smoke run, under 2 minutes
    python scripts/bench_structured.py --full    # also MobileNetV2: ~10 more minutes
    python scripts/bench_structured.py --out r.md

Progress goes to stderr; the markdown report goes to stdout (and `--out`).
"""

import argparse
import contextlib
import gzip
import io
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from benchlib import REPO_ROOT, log

SEED = 0
BATCH = 32
FRACTIONS = (0.25, 0.5, 0.75)
LATENCY_RUNS = 100
LATENCY_ROUNDS = 3
LATENCY_TARGET = 0.6
RECAL_BATCHES = 50
ACCURACY_TOLERANCE = 0.01
CONFIGS = {
    "default": {"cnn": {"dense_epochs": 15, "finetune_epochs": 8, "distil": True},
                "mobilenetv2": {"dense_epochs": 15, "finetune_epochs": 4, "distil": False}},
    "quick": {"cnn": {"dense_epochs": 1, "finetune_epochs": 1, "distil": True},
              "mobilenetv2": {"dense_epochs": 1, "finetune_epochs": 1, "distil": False}},
}
#: The default run's models; `--full` adds MobileNetV2 (too slow for ~10 minutes on
#: 2 cores: its ~150 wrapped layers make each fine-tuning start take ~30 s).
DEFAULT_MODELS = ("cnn",)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def cnn(keras):
    """VGG/ResNet-ish: Conv-BN-ReLU x2 (32) / x1 + basic block (64) / x2 (128), GAP, Dense."""
    L = keras.layers

    def cbr(x, filters, name):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        x = L.BatchNormalization(name=name + "_bn")(x)
        return L.ReLU(name=name + "_relu")(x)

    inputs = keras.Input((32, 32, 3), name="image")
    x = cbr(inputs, 32, "conv1")
    x = cbr(x, 32, "conv2")
    x = L.MaxPooling2D(name="pool1")(x)                       # 16x16
    x = cbr(x, 64, "conv3")
    y = cbr(x, 64, "res_a")
    y = L.Conv2D(64, 3, padding="same", use_bias=False, name="res_b")(y)
    y = L.BatchNormalization(name="res_b_bn")(y)
    x = L.ReLU(name="res_relu")(L.Add(name="res_add")([x, y]))
    x = L.MaxPooling2D(name="pool2")(x)                       # 8x8
    x = cbr(x, 128, "conv4")
    x = cbr(x, 128, "conv5")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x), name="cnn")


def mobilenetv2(keras):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input shape not 96/128/...": fine, no weights
        return keras.applications.MobileNetV2(
            weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35,
            classifier_activation=None)


MODELS = {"cnn": cnn, "mobilenetv2": mobilenetv2}


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------
def nonzeros(model):
    return int(sum(np.count_nonzero(np.asarray(w)) for w in model.weights))


def prunable_kernel_params(keras, model):
    """Parameters of the kernels magnitude pruning prunes: Conv2D and Dense (like TFMOT,
    `prune_low_magnitude` leaves DepthwiseConv2D kernels dense by default)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            total += int(np.prod(layer.kernel.shape))
    return total


def macs(keras, model):
    """Multiply-accumulates of one inference, per Conv2D / DepthwiseConv2D / Dense."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            out = layer.output.shape
            kh, kw, _, _ = layer.kernel.shape
            total += out[1] * out[2] * out[3] * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            total += out[1] * out[2] * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            total += int(np.prod(layer.output.shape[1:-1] or [1])) * cin * cout
    return int(total)


def keras_accuracy(model, x, y):
    logits = np.concatenate([np.asarray(model(x[i:i + 256], training=False))
                             for i in range(0, len(x), 256)])
    return float(np.mean(np.argmax(logits, -1) == y))


def tflite(tfc, model, mode, calibration=None):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tfc.export.to_tflite(model, mode=mode, representative_data=calibration)


def interpreter(flatbuffer, xnnpack=True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {} if xnnpack else {
        "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    return Interpreter(model_content=bytes(flatbuffer), num_threads=1, **kwargs)


def litert_accuracy(flatbuffer, x, y):
    it = interpreter(flatbuffer)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], (len(x),) + x.shape[1:])
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(np.float32))
    it.invoke()
    return float(np.mean(np.argmax(it.get_tensor(out["index"]), -1) == y))


def latencies(flatbuffers, sample):
    """{key: min over rounds of the median batch-1 invoke() ms}; keys are (name, kind)."""
    runners = {}
    for key, (flat, xnnpack) in flatbuffers.items():
        it = interpreter(flat, xnnpack)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], sample.astype(np.float32))
        runners[key] = it
    best = {key: math.inf for key in runners}
    for _ in range(LATENCY_ROUNDS):
        for key, it in runners.items():
            for _ in range(5):
                it.invoke()
            times, deadline = [], time.perf_counter() + 1.0
            while len(times) < LATENCY_RUNS and (len(times) < 10
                                                 or time.perf_counter() < deadline):
                start = time.perf_counter()
                it.invoke()
                times.append(time.perf_counter() - start)
            best[key] = min(best[key], float(np.median(times)) * 1000)
    return best


# ---------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------
def copy_of(keras, model):
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def recalibrate_bn(keras, model, x):
    """Re-estimates every BatchNormalization's moving mean/variance on training batches.

    Pruning changes the activations the moving statistics were tracking (the masks
    keep changing until the schedule ends, magnitude masks keep being reapplied),
    so they lag behind the final weights. `RECAL_BATCHES` forward passes with
    `training=True` and momentum 0.9 (0.9^50: the old statistics are forgotten);
    no weight is trained.
    """
    layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    if not layers:
        return model
    saved = [l.momentum for l in layers]
    for layer in layers:
        layer.momentum = 0.9
    rng = np.random.default_rng(SEED)
    for _ in range(RECAL_BATCHES):
        model(x[rng.choice(len(x), BATCH, replace=False)], training=True)
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
    return model


def compile_fit(keras, model, data, epochs, lr, callbacks=()):
    (x, y) = data
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True,
              callbacks=list(callbacks))
    return model


def run_model(tfc, keras, name, cfg, data):
    (x, y), (xt, yt) = data
    spe = math.ceil(len(x) / BATCH)
    calibration = x[:200]
    keras.utils.set_random_seed(SEED)
    start = time.perf_counter()
    dense = compile_fit(keras, MODELS[name](keras), (x, y), cfg["dense_epochs"], 2e-3)
    before = keras_accuracy(dense, xt, yt)
    recalibrate_bn(keras, dense, x)  # the same treatment as the pruned models
    dense_gain = keras_accuracy(dense, xt, yt) - before
    log(name, f"dense trained in {time.perf_counter() - start:.0f} s, "
              f"accuracy {before:.4f}, {before + dense_gain:.4f} after BN recalibration")
    dense_params = nonzeros(dense)
    kernel_params = prunable_kernel_params(keras, dense)
    finetune_steps = cfg["finetune_epochs"] * spe
    frequency = max(1, spe // 4)
    end_step = max(frequency, round(0.6 * finetune_steps / frequency) * frequency)

    models = {("dense", 0.0): dense}
    sparsities, bn_gain = {}, {("dense", 0.0): dense_gain}
    for fraction in FRACTIONS:
        keras.utils.set_random_seed(SEED)
        start = time.perf_counter()
        schedule = tfc.pruning.PolynomialDecay(0.0, fraction, begin_step=0, end_step=end_step,
                                               frequency=frequency)
        wrapped = tfc.pruning.prune_filters(copy_of(keras, dense), pruning_schedule=schedule,
                                            criterion="l2")
        callbacks = [tfc.pruning.UpdatePruningStep()]
        if cfg["distil"]:
            teacher = copy_of(keras, dense)
            distiller = tfc.distillation.Distiller(
                teacher, wrapped, tfc.distillation.LogitsDistillation(temperature=4.0),
                student_loss_weight=0.5)
            compile_fit(keras, distiller, (x, y), cfg["finetune_epochs"], 1e-3, callbacks)
            wrapped = distiller.student
        else:
            compile_fit(keras, wrapped, (x, y), cfg["finetune_epochs"], 1e-3, callbacks)
        small = tfc.shrink(wrapped)
        # shrink must not change the outputs of the masked model.
        diff = float(np.max(np.abs(np.asarray(wrapped(xt[:64], training=False))
                                   - np.asarray(small(xt[:64], training=False)))))
        before = keras_accuracy(small, xt, yt)
        recalibrate_bn(keras, small, x)
        bn_gain[("filters", fraction)] = keras_accuracy(small, xt, yt) - before
        models[("filters", fraction)] = small
        log(name, f"filters {fraction:.0%}: fine-tuned + shrunk in "
                  f"{time.perf_counter() - start:.0f} s, params {nonzeros(small):,}, "
                  f"max |masked - shrunk| {diff:.2e}")
        if diff > 1e-3:
            log(name, f"WARNING: shrink changed the outputs by {diff:.3g}")

        keras.utils.set_random_seed(SEED)
        start = time.perf_counter()
        sparsity = min(0.99, (dense_params - nonzeros(small)) / kernel_params)
        sparsities[fraction] = sparsity
        magnitude = tfc.pruning.prune_low_magnitude(
            copy_of(keras, dense),
            pruning_schedule=tfc.pruning.ConstantSparsity(sparsity, 0, frequency=frequency))
        compile_fit(keras, magnitude, (x, y), cfg["finetune_epochs"], 1e-3,
                    [tfc.pruning.UpdatePruningStep()])
        stripped = tfc.strip(magnitude)
        before = keras_accuracy(stripped, xt, yt)
        recalibrate_bn(keras, stripped, x)
        bn_gain[("magnitude", fraction)] = keras_accuracy(stripped, xt, yt) - before
        models[("magnitude", fraction)] = stripped
        log(name, f"magnitude {sparsity:.1%} (for {fraction:.0%} filters): fine-tuned in "
                  f"{time.perf_counter() - start:.0f} s, params "
                  f"{nonzeros(models[('magnitude', fraction)]):,}")

    start = time.perf_counter()
    flats, rows = {}, {}
    for key, model in models.items():
        method, fraction = key
        flat = tflite(tfc, model, "float")
        row = {"method": method, "filters removed": f"{fraction:.0%}" if fraction else "-",
               "kernel sparsity": (f"{sparsities[fraction]:.1%}" if method == "magnitude"
                                   else "-"),
               "parameters": nonzeros(model),
               "MMACs": macs(keras, model) / 1e6,
               "float KB": len(flat) / 1024,
               "gzip'd float KB": len(gzip.compress(flat, 9)) / 1024,
               "keras acc": keras_accuracy(model, xt, yt),
               "BN recal gain": bn_gain.get(key)}
        flats[(key, "float_xnn")] = (flat, True)
        flats[(key, "float_builtin")] = (flat, False)
        if method != "magnitude":
            int8 = tflite(tfc, model, "int8", calibration)
            row["int8 KB"] = len(int8) / 1024
            row["int8 TFLite acc"] = litert_accuracy(int8, xt, yt)
            flats[(key, "int8_xnn")] = (int8, True)
        rows[key] = row
    log(name, f"converted in {time.perf_counter() - start:.0f} s; timing LiteRT")
    ms = latencies(flats, xt[:1])
    base = ("dense", 0.0)
    for key, row in rows.items():
        for kind, column in (("float_xnn", "latency float XNNPack"),
                             ("float_builtin", "latency float builtin"),
                             ("int8_xnn", "latency int8 XNNPack")):
            if (key, kind) in ms:
                row[column] = ms[(key, kind)] / ms[(base, kind)]
    dense_ms = {kind: ms[(base, kind)] for kind in ("float_xnn", "float_builtin", "int8_xnn")}
    return {"rows": list(rows.values()), "dense_ms": dense_ms, "config": cfg}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
COLUMNS = ["method", "filters removed", "kernel sparsity", "parameters", "MMACs", "float KB",
           "gzip'd float KB", "int8 KB", "latency float XNNPack", "latency float builtin",
           "latency int8 XNNPack", "keras acc", "BN recal gain", "int8 TFLite acc"]


def table(result):
    import pandas as pd

    frame = pd.DataFrame(result["rows"])[COLUMNS].astype(object)
    frame = frame.where(frame.notna(), None)  # tabulate prints None as missingval
    return frame.to_markdown(index=False, floatfmt=".3f", intfmt=",", missingval="-")


def find(result, method, fraction):
    label = f"{fraction:.0%}" if fraction else "-"
    return next(r for r in result["rows"]
                if r["method"] == method and r["filters removed"] == label)


def targets(results):
    lines = []
    for name, result in results.items():
        dense, half = find(result, "dense", 0), find(result, "filters", 0.5)
        note = "" if name == "cnn" else " (informative)"
        ratio = half["latency float XNNPack"]
        lines.append(f"- {name}{note}: 50% filters -> latency <= {LATENCY_TARGET}x dense "
                     f"(XNNPack, 1 thread): {'PASS' if ratio <= LATENCY_TARGET else 'MISS'} "
                     f"({ratio:.3f}x; builtin {half['latency float builtin']:.3f}x, "
                     f"int8 XNNPack {half['latency int8 XNNPack']:.3f}x)")
        gap = dense["keras acc"] - half["keras acc"]
        others = ", ".join(f"{f:.0%}: {dense['keras acc'] - find(result, 'filters', f)['keras acc']:+.4f}"
                           for f in FRACTIONS if f != 0.5)
        lines.append(f"- {name}{note}: accuracy within 1 point of dense after fine-tuning "
                     f"(50% filters): {'PASS' if gap <= ACCURACY_TOLERANCE + 1e-9 else 'MISS'} "
                     f"(dense {dense['keras acc']:.4f}, shrunk {half['keras acc']:.4f}, "
                     f"drop {gap:+.4f}; drop at {others})")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny epochs: a smoke run")
    parser.add_argument("--full", action="store_true",
                        help="also MobileNetV2 (adds roughly 10 minutes on 2 cores)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS),
                        help="the models to run (default: cnn; with --full: all)")
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench_structured.md",
                        help="the markdown report (default: %(default)s)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "default"
    names = args.models or (list(MODELS) if args.full else list(DEFAULT_MODELS))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO_ROOT))
    import keras

    import tfcompress as tfc
    from tfcompress import examples

    warnings.filterwarnings("ignore", message=".*Statistics for quantized inputs.*")
    start, load_before = time.perf_counter(), os.getloadavg()
    (x, y), _, (xt, yt) = examples.digits(seed=SEED)

    def upsample(a):
        return np.repeat(np.repeat(np.repeat(a, 4, axis=1), 4, axis=2), 3, axis=3)

    data = ((upsample(x).astype("float32"), y), (upsample(xt).astype("float32"), yt))
    results = {}
    for name in names:
        results[name] = run_model(tfc, keras, name, CONFIGS[mode][name], data)

    lines = [f"## Structured (filter) pruning + shrink vs magnitude pruning ({mode}, "
             f"digits upsampled to 32x32x3, {len(x)} train / {len(xt)} test, seed {SEED})", ""]
    for name, result in results.items():
        cfg, d = result["config"], result["dense_ms"]
        lines += [f"### {name} (dense {cfg['dense_epochs']} epochs; fine-tune "
                  f"{cfg['finetune_epochs']} epochs per row"
                  f"{', filters rows distilled from dense' if cfg['distil'] else ''}; dense "
                  f"batch-1 latency {d['float_xnn']:.3f} ms float XNNPack, "
                  f"{d['float_builtin']:.3f} ms float builtin, {d['int8_xnn']:.3f} ms int8 "
                  "XNNPack, 1 thread)", "", table(result), ""]
    lines += ["Latency columns are ratios to the dense model's (same runtime, batch 1, 1 thread, "
              f"min over {LATENCY_ROUNDS} interleaved rounds of the median invoke()). "
              "Parameters are non-zero weights; MMACs are the model's shapes (magnitude "
              "pruning keeps the dense ones).", "", "Targets:"] + targets(results)
    load_after = os.getloadavg()
    lines += ["", f"Total wall time: {time.perf_counter() - start:.0f} s on {os.cpu_count()} "
              f"CPUs (load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
              "latencies are only meaningful on an otherwise idle machine)."]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text + "\n", encoding="utf-8")
    log("bench", f"written to {args.out}")


if __name__ == "__main__":
    main()
