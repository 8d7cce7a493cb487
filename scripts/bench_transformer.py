"""Transformers under int8: float vs tfcompress QAT vs post-training vs Keras' own, one run.

Two models on scikit-learn's real digits (no download), trained in float to
convergence (Adam with cosine decay):
- a plain-Keras transformer block (`examples.transformer_block`, width 128,
  4 heads): each 8x8 image as 8 tokens of 8 features;
- a BERT-style encoder from keras-hub's layers (`examples.digits_encoder`,
  2 TransformerEncoders, hidden 128, 4 heads, GELU, padding mask): each
  image as 64 tokens, its 17 intensity levels as the vocabulary.

Each is exported four ways: float TFLite; the converter's post-training int8
(256 representative samples); tfcompress QAT (`quantize_model`, 3 epochs of
Adam at 1e-5: the float training has decayed to zero, and a larger step
undoes its convergence, which on a 270-image test split moves accuracy by
more than quantization does) to int8 with its own ranges; Keras 3's `model.quantize("int8")`
exported with `model.export(format="litert")` (when that export fails
offline, its Keras accuracy is still shown and the error is). Columns: test
accuracy (in LiteRT), bytes, batch-1 latency as a ratio to float (XNNPack
and builtin kernels, one thread), how many FULLY_CONNECTED / BATCH_MATMUL
ops run int8, and the float compute ops left between input and output.

The whole pipeline runs for 3 seeds (split, initialization, training
order): one test split has 270 images, so one image is 0.37 points and a
single run cannot resolve the 1-point target. Targets (PASS/FAIL lines), on
accuracy averaged over the seeds: tfcompress int8 accuracy >= every other
int8 column and within 1 point of float; int8 bytes <= 0.3x float. The big
table is seed 0's.

    python scripts/bench_transformer.py            # about 12 minutes on 2 cores (3 seeds)
    python scripts/bench_transformer.py --quick    # smoke run (targets not meaningful)
"""

import argparse
import os
import re
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress import examples, export  # noqa: E402

MATMULS = ("FULLY_CONNECTED", "BATCH_MATMUL")
QAT_LEARNING_RATE = 1e-5
SEEDS = (0, 1, 2)


def digits_as_rows(seed=0):
    (x, y), (xv, yv), (xt, yt) = examples.digits(seed)
    return [(a.reshape(len(a), 8, 8), b) for a, b in ((x, y), (xv, yv), (xt, yt))]


def block():
    return examples.transformer_block(width=128, heads=4)


def encoder():
    return examples.digits_encoder(num_layers=2, hidden_dim=128, num_heads=4,
                                   intermediate_dim=256)


def latency_ms(flat, sample, builtin, runs):
    """Median batch-1 time of the serving signature in LiteRT, one thread."""
    from ai_edge_litert.interpreter import OpResolverType

    resolver = ({"experimental_op_resolver_type":
                 OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if builtin else {})
    interp = export.census.interpreter(flat, num_threads=1, **resolver)
    runner = interp.get_signature_runner()
    runner(**sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(**sample)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def litert_accuracy(flat, x, y):
    interp = export.census.interpreter(flat, num_threads=1)
    runner = interp.get_signature_runner()
    details = runner.get_input_details()
    features = x if isinstance(x, dict) else {next(iter(details)): x}
    correct = 0
    for i in range(len(y)):
        sample = {}
        for name, detail in details.items():
            value = features[name][i:i + 1]
            scale, zero = detail["quantization"]
            if scale:
                value = np.clip(np.round(value / scale + zero), -128, 127)
            sample[name] = value.astype(detail["dtype"])
        out = next(iter(runner(**sample).values()))
        correct += int(np.argmax(out) == y[i])
    return correct / len(y)


def census(flat):
    ops = [op for op in export.census.ops(flat) if op.kind != "convert"]
    matmuls = [op for op in ops if op.name in MATMULS]
    float_ops = sorted({op.name for op in ops if op.kind in ("float", "hybrid")})
    return (f"{sum(op.kind == 'int8' for op in matmuls)}/{len(matmuls)}",
            sum(op.kind in ("float", "hybrid") for op in ops), ", ".join(float_ops) or "–")


def keras_quantized(model):
    """Keras 3's own int8 (post-training, weights only)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.quantize("int8")
    return copy


def keras_litert(copy):
    """A `keras_quantized` model exported with `format="litert"`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        copy.export(path, format="litert", verbose=False)
        with open(path, "rb") as handle:
            return handle.read()


def run(name, build, data, epochs, qat_epochs, runs, seed=0):
    (x, y), (xv, yv), (xt, yt) = data
    keras.utils.set_random_seed(seed)
    model = build()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = epochs * -(-len(y) // 32)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
                  loss, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, validation_data=(xv, yv), verbose=0)
    flats = {"float TFLite": export.to_tflite(model)}
    calibration = {k: v[:256] for k, v in x.items()} if isinstance(x, dict) else x[:256]
    flats["converter post-training int8"] = export.to_tflite(
        model, mode="int8", representative_data=calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = tfc.quantization.quantize_model(model)
        qat.compile(keras.optimizers.Adam(QAT_LEARNING_RATE), loss, metrics=["accuracy"])
        qat.fit(x, y, batch_size=32, epochs=qat_epochs, verbose=0)
        flats["tfcompress QAT int8"] = export.to_tflite(qat, mode="int8")
    quantized = keras_quantized(model)
    quantized.compile(loss=loss, metrics=["accuracy"])
    keras_accuracy = float(quantized.evaluate(xt, yt, verbose=0)[1])
    try:
        flats["Keras quantize('int8') + export litert"] = keras_litert(quantized)
        keras_note = None
    except Exception as error:  # reported: whether Keras' own path works offline
        text = str(error)
        found = re.search(r"error: ('tfl\.[^\n]*)", text)
        keras_note = f"failed: {type(error).__name__}: " + (
            found.group(1) if found else text.splitlines()[0])[:160]
    sample = {k: v[:1] for k, v in xt.items()} if isinstance(xt, dict) else None
    rows = []
    base = {}
    for variant, flat in flats.items():
        interp_inputs = export.census.interpreter(flat).get_signature_runner().get_input_details()
        one = sample or {next(iter(interp_inputs)): xt[:1]}
        one = {k: (np.clip(np.round(v / d["quantization"][0] + d["quantization"][1]), -128, 127)
                   if d["quantization"][0] else v).astype(d["dtype"])
               for (k, v), d in ((item, interp_inputs[item[0]]) for item in one.items())}
        lat = {b: latency_ms(flat, one, b, runs) for b in (False, True)}
        base = base or lat
        int8, left, names = census(flat)
        rows.append({"model": name, "export": variant, "seed": seed,
                     "accuracy": litert_accuracy(flat, xt, yt),
                     "bytes": len(flat),
                     "latency × float (XNNPack)": lat[False] / base[False],
                     "latency × float (builtin)": lat[True] / base[True],
                     "FC/BMM int8": int8, "float compute ops": left, "float op types": names})
    if keras_note:
        rows.append({"model": name, "export": "Keras quantize('int8') (in Keras; export failed)",
                     "seed": seed, "accuracy": keras_accuracy, "float op types": keras_note})
    float_acc = float(model.evaluate(xt, yt, verbose=0)[1])
    print(f"{name}: float Keras test accuracy {float_acc:.4f}", flush=True)
    return rows


def mean_accuracy(rows):
    """`{(model, export): accuracy averaged over seeds}`, and a table of every seed's."""
    frame = pd.DataFrame([r for r in rows if r.get("accuracy") is not None])
    table = frame.pivot_table(index=["model", "export"], columns="seed", values="accuracy",
                              sort=False)
    table.columns = [f"accuracy, seed {c}" for c in table.columns]
    table["mean"] = table.mean(axis=1)
    return table


def targets(rows, means):
    """PASS/FAIL lines for the issue's targets, per model (accuracy: mean over seeds)."""
    lines = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = {r["export"]: {**r, "accuracy": means.loc[(name, r["export"]), "mean"]}
                for r in rows if r["model"] == name and r["seed"] == 0}
        ours, float_row = mine["tfcompress QAT int8"], mine["float TFLite"]
        others = {k: r["accuracy"] for k, r in mine.items()
                  if k not in ("tfcompress QAT int8", "float TFLite")}
        # (1e-6: Keras reports accuracy in float32, LiteRT's is counted in float64)
        checks = [(f"QAT int8 accuracy {ours['accuracy']:.4f} >= {k} {v:.4f}",
                   ours["accuracy"] >= v - 1e-6) for k, v in others.items()]
        checks.append((f"QAT int8 accuracy {ours['accuracy']:.4f} within 1 point of float "
                       f"{float_row['accuracy']:.4f}",
                       ours["accuracy"] >= float_row["accuracy"] - 0.01 - 1e-6))
        ratio = ours["bytes"] / float_row["bytes"]
        checks.append((f"QAT int8 bytes {ratio:.3f}x float <= 0.3x", ratio <= 0.3))
        lines += [f"{'PASS' if ok else 'FAIL'} {name}: {text}" for text, ok in checks]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs, qat_epochs, runs = (1, 1, 20) if args.quick else (30, 3, 200)
    seeds = SEEDS[:1] if args.quick else SEEDS
    start = time.time()
    rows = []
    for seed in seeds:
        rows += run("transformer block", block, digits_as_rows(seed), epochs, qat_epochs, runs,
                    seed)
        rows += run("BERT-style encoder", encoder, examples.digits_tokens(seed),
                    max(1, epochs // 2), qat_epochs, runs, seed)
    table = pd.DataFrame([r for r in rows if r["seed"] == 0]).drop(columns="seed")
    print(table.set_index(["model", "export"]).to_markdown(floatfmt=".4g"))
    means = mean_accuracy(rows)
    print("\n" + means.to_markdown(floatfmt=".4f"))
    print("\n".join(targets(rows, means)))
    print(f"\nTotal wall time: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
