"""Transformers under int8, measured as they stand: float vs QAT vs post-training vs Keras.

Two models on scikit-learn's real digits (no download), trained in float:
- a plain-Keras transformer block: each 8x8 image as 8 tokens of 8 features,
  Dense embedding, MultiHeadAttention, residual Add, LayerNormalization, a GELU
  feed-forward, pooling, Dense;
- a keras-hub BERT-style classifier (`BertTextClassifier`, 2 layers, hidden
  64, random init from a config): each image as 64 tokens, its 17 intensity
  levels as the vocabulary.

Each is exported four ways: float TFLite; the converter's post-training int8
(representative data); tfcompress QAT (`quantize_model`, a few epochs) to int8
with its own ranges; Keras 3's `model.quantize("int8")` exported with
`model.export(format="litert")`. Columns: test accuracy, bytes, batch-1
latency as a ratio to float (XNNPack and builtin kernels, one thread), how
many FULLY_CONNECTED / BATCH_MATMUL ops run int8, and the float compute ops
left between input and output. The baseline issue 13 starts from.

    python scripts/bench_transformer.py            # about 5 minutes on 2 cores
    python scripts/bench_transformer.py --quick    # smoke run
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


def digits_as_rows():
    (x, y), (xv, yv), (xt, yt) = examples.digits()
    return [(a.reshape(len(a), 8, 8), b) for a, b in ((x, y), (xv, yv), (xt, yt))]


def digits_as_tokens():
    out = []
    for a, b in digits_as_rows():
        tokens = np.rint(a.reshape(len(a), 64) * 16).astype("int32")
        out.append(({"token_ids": tokens, "segment_ids": np.zeros_like(tokens),
                     "padding_mask": np.ones_like(tokens)}, b))
    return out


def transformer_block(width=32, heads=2):
    inputs = keras.Input((8, 8), name="rows")
    x = keras.layers.Dense(width, name="embed")(inputs)
    attended = keras.layers.MultiHeadAttention(heads, width // heads, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm_1")(keras.layers.Add()([x, attended]))
    hidden = keras.layers.Dense(2 * width, activation="gelu", name="ffn_1")(x)
    x = keras.layers.Add()([x, keras.layers.Dense(width, name="ffn_2")(hidden)])
    x = keras.layers.LayerNormalization(name="norm_2")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="block")


def bert():
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=17, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=128,
        max_sequence_length=64)
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=10,
                                               preprocessor=None, dropout=0.0)


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


def keras_litert(model, x, y):
    """Keras 3's own int8 (post-training, weights only) exported with `format="litert"`."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.quantize("int8")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        copy.export(path, format="litert", verbose=False)
        with open(path, "rb") as handle:
            return handle.read()


def run(name, build, data, epochs, qat_epochs, runs):
    (x, y), (xv, yv), (xt, yt) = data
    keras.utils.set_random_seed(0)
    model = build()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, validation_data=(xv, yv), verbose=0)
    flats = {"float TFLite": export.to_tflite(model)}
    calibration = {k: v[:256] for k, v in x.items()} if isinstance(x, dict) else x[:256]
    flats["converter post-training int8"] = export.to_tflite(
        model, mode="int8", representative_data=calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = tfc.quantization.quantize_model(model)
        qat.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
        qat.fit(x, y, batch_size=32, epochs=qat_epochs, verbose=0)
        flats["tfcompress QAT int8"] = export.to_tflite(qat, mode="int8")
    try:
        flats["Keras quantize('int8') + export litert"] = keras_litert(model, x, y)
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
        rows.append({"model": name, "export": variant, "accuracy": litert_accuracy(flat, xt, yt),
                     "bytes": len(flat),
                     "latency × float (XNNPack)": lat[False] / base[False],
                     "latency × float (builtin)": lat[True] / base[True],
                     "FC/BMM int8": int8, "float compute ops": left, "float op types": names})
    if keras_note:
        rows.append({"model": name, "export": "Keras quantize('int8') + export litert",
                     "float op types": keras_note})
    float_acc = float(model.evaluate(xt, yt, verbose=0)[1])
    print(f"{name}: float Keras test accuracy {float_acc:.4f}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs, qat_epochs, runs = (2, 1, 20) if args.quick else (30, 3, 200)
    start = time.time()
    rows = run("transformer block", transformer_block, digits_as_rows(), epochs, qat_epochs, runs)
    rows += run("keras-hub BERT", bert, digits_as_tokens(), max(2, epochs // 3), qat_epochs, runs)
    table = pd.DataFrame(rows).set_index(["model", "export"])
    print(table.to_markdown(floatfmt=".3g"))
    print(f"\nTotal wall time: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
