"""Size and speed of each TFLite export mode, on the digits CNN and the click-through model.

For each model: train it, export float, dynamic-range, float16 and full int8
flatbuffers, then prune a copy (80 % for the CNN, 70 % for the click model),
export it as int8 with the dense encoding, try the sparse one (which
`to_tflite` refuses when LiteRT's default interpreter cannot run it), and
run `tfcompress.export.verify` on each. Prints a markdown table: bytes, gzip
bytes and LiteRT batch-1 latency (median `invoke`, one thread), each also as
a ratio to float, plus agreement with the Keras model and test accuracy.

A second table is about `PruneForLatencyOnXNNPack`: a MobileNet-v1-like
model (224x224, width 1.0; `--quick`: 128x128, width 0.5) pruned to 85 % in
its 1x1 convolutions by the policy, exported float32 with the sparse
encoding, against the same model unpruned and dense, each run with XNNPack
and with the builtin kernels, measured side by side (interleaved rounds).

    python scripts/bench_export.py            # about 4-5 minutes on 2 cores
    python scripts/bench_export.py --quick    # smoke run
    python scripts/bench_export.py --policy-only
"""

import argparse
import gzip
import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress import examples, export  # noqa: E402


def _prune(model, x, y, loss, sparsity, epochs, batch_size):
    steps = int(np.ceil(len(next(iter(x.values())) if isinstance(x, dict) else x) / batch_size))
    end = max(2, int(0.7 * steps * epochs))
    schedule = tfc.pruning.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end,
                                           frequency=max(1, end // 10))
    pruned = tfc.pruning.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(keras.optimizers.Adam(1e-3), loss)
    pruned.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    return tfc.pruning.strip_pruning(pruned)


def digits_case(epochs):
    (x, y), _, (xt, yt) = examples.digits()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = examples.digits_cnn()
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    pruned = _prune(model, x, y, loss, 0.8, max(1, epochs // 2), 32)
    return "digits CNN", model, pruned, x[:200], (xt, yt)


def click_case(epochs):
    features, clicks = examples.click_logs(n=20000)
    train = {k: v[:16000] for k, v in features.items()}
    test = ({k: v[16000:] for k, v in features.items()}, clicks[16000:])
    model = examples.click_model()
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(train, clicks[:16000], batch_size=128, epochs=max(1, epochs // 4), verbose=0)
    pruned = _prune(model, train, clicks[:16000], "binary_crossentropy", 0.7,
                    max(1, epochs // 4), 128)
    calibration = {k: v[:200] for k, v in train.items()}
    return "click model", model, pruned, calibration, test


def variants(model, pruned, calibration):
    yield "float", model, {}
    yield "dynamic", model, {"mode": "dynamic"}
    yield "float16", model, {"mode": "float16"}
    yield "int8", model, {"mode": "int8", "representative_data": calibration}
    yield "int8, pruned (dense encoding)", pruned, {"mode": "int8",
                                                     "representative_data": calibration}
    yield "int8, pruned, sparse", pruned, {"mode": "int8", "representative_data": calibration,
                                           "sparse": True}
    yield "float, pruned, sparse", pruned, {"sparse": True}


def run(quick=False):
    epochs = 2 if quick else 12
    runs = 50 if quick else 1000
    rows = []
    for case in (digits_case, click_case):
        keras.utils.set_random_seed(0)
        start = time.time()
        name, model, pruned, calibration, test = case(epochs)
        print(f"{name}: trained and pruned in {time.time() - start:.0f}s", flush=True)
        base = None
        for variant, source, kwargs in variants(model, pruned, calibration):
            try:
                flat = export.to_tflite(source, **kwargs)
            except ValueError as error:  # a sparse file LiteRT could not run
                blocked = re.search(r"fails on (.+?) reading", str(error))
                rows.append((name, variant, blocked.group(1) if blocked else str(error), base))
                print(f"  {variant}: refused by to_tflite", flush=True)
                continue
            # Latency is noisy on a shared machine: best of three medians.
            reports = [export.verify(flat, source, test, latency_runs=runs) for _ in range(3)]
            report = reports[0]
            report.latency_ms = min(r.latency_ms for r in reports)
            base = base or report
            rows.append((name, variant, report, base))
            print(f"  {variant}: {report.bytes:,} bytes, {report.latency_ms:.4f} ms"
                  + (" (no XNNPACK)" if report.notes else ""), flush=True)
    print()
    print(table(rows))


def table(rows):
    out = ["| model | export | bytes | × float | gzip bytes | × float | latency ms | × float "
           "| agreement with Keras | test metric |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, variant, r, base in rows:
        if isinstance(r, str):
            out.append(f"| {name} | {variant} | refused by `to_tflite`: XNNPack cannot run "
                       f"{r} with sparse int8 weights | | | | | | | |")
            continue
        latency = f"{r.latency_ms:.4f}" + (" *" if r.notes else "")
        out.append(
            f"| {name} | {variant} | {r.bytes:,} | {r.bytes / base.bytes:.2f} "
            f"| {r.gzip_bytes:,} | {r.gzip_bytes / base.gzip_bytes:.2f} "
            f"| {latency} | {r.latency_ms / base.latency_ms:.2f} "
            f"| {r.agreement:.2%} ({r.agreement_kind}) | {_metric(r)} |")
    if any(getattr(r, "notes", None) for _, _, r, _ in rows):
        out.append("")
        out.append("\\* LiteRT's default XNNPACK delegate refused the graph; it ran on the "
                   "builtin kernels.")
    return "\n".join(out)


def _metric(report):
    name = getattr(report, "metric", None) or "accuracy"
    value = getattr(report, "artifact_score", None)
    value = report.artifact_accuracy if value is None else value
    return "" if value is None else f"{value:.3f} ({name})"


# -- PruneForLatencyOnXNNPack: what XNNPack's sparse inference buys ------------


def mobilenet_like(size=224, width=1.0, classes=1000):
    """MobileNet v1 built to XNNPack's sparse-inference rules (PruneForLatencyOnXNNPack).

    Stem ZeroPadding2D(1) + 3x3 stride-2 'valid' conv; 13 depthwise-separable
    blocks, stride 2 as ZeroPadding2D(1) + 'valid' depthwise; global average
    pooling, then the Dense classifier (not pruned by the policy).
    """
    L = keras.layers
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
        (1024, 2), (1024, 1)]
    inputs = keras.Input((size, size, 3), name="image")
    x = L.ZeroPadding2D(1)(inputs)
    x = L.Conv2D(int(32 * width), 3, strides=2, padding="valid", use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    for filters, stride in blocks:
        if stride == 2:
            x = L.ZeroPadding2D(1)(x)
        x = L.DepthwiseConv2D(3, strides=stride, padding="valid" if stride == 2 else "same",
                              use_bias=False)(x)
        x = L.ReLU(6.0)(L.BatchNormalization()(x))
        x = L.Conv2D(int(filters * width), 1, use_bias=False)(x)
        x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(classes, name="logits")(x), name="mobilenet_like")


def latency_ms(flat, sample, builtin, runs):
    """Median batch-1 `invoke` time in LiteRT (one thread), and the output."""
    from ai_edge_litert.interpreter import OpResolverType

    resolver = ({"experimental_op_resolver_type":
                 OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if builtin else {})
    interp = export.census.interpreter(flat, num_threads=1, **resolver)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], sample)
    interp.invoke()  # XNNPack prepares (and densifies) on the first invoke
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), interp.get_tensor(
        interp.get_output_details()[0]["index"])


def policy_run(quick=False, sparsity=0.85):
    size, width = (128, 0.5) if quick else (224, 1.0)
    runs, rounds = (10, 2) if quick else (30, 3)
    keras.utils.set_random_seed(0)
    start = time.time()
    model = mobilenet_like(size, width)
    # One training step reaches the constant target; the weights are random,
    # which is all latency and size depend on.
    pruned = tfc.pruning.prune_low_magnitude(
        model, pruning_schedule=tfc.pruning.ConstantSparsity(sparsity, 0, frequency=1),
        pruning_policy=tfc.pruning.PruneForLatencyOnXNNPack())
    x = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype("float32")
    pruned.compile("sgd", "mse")
    pruned.fit(x, np.zeros((2, 1000), "float32"), batch_size=2, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    wrapped = tfc.core.find(pruned, tfc.pruning.PruneLowMagnitude)
    stripped = tfc.pruning.strip_pruning(pruned)
    pointwise = sum(int(np.prod(w.layer.kernel.shape)) for w in wrapped)
    print(f"mobilenet-like {size}x{size} width {width}: {len(wrapped)} 1x1 Conv2D pruned to "
          f"{sparsity:.0%} ({pointwise / model.count_params():.0%} of the weights), "
          f"{time.time() - start:.0f}s", flush=True)
    flats = {
        "dense (not pruned), float32": export.to_tflite(model),
        f"policy-pruned {sparsity:.0%}, float32, sparse": export.to_tflite(stripped, sparse=True),
        f"policy-pruned {sparsity:.0%}, float16, sparse": export.to_tflite(
            stripped, mode="float16", sparse=True),
    }
    references = {"dense (not pruned), float32": np.asarray(model(x[:1], training=False))}
    reference = np.asarray(stripped(x[:1], training=False))
    cells = [(name, builtin) for name in flats for builtin in (False, True)]
    best, diffs = {}, {}
    for _ in range(rounds):  # interleaved: every variant sees the same machine load
        for name, builtin in cells:
            ms, out = latency_ms(flats[name], x[:1], builtin, runs)
            best[name, builtin] = min(ms, best.get((name, builtin), ms))
            ref = references.get(name, reference)
            diffs[name, builtin] = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    print()
    print(policy_table(flats, best, diffs))


def policy_table(flats, best, diffs):
    base = best[next(iter(flats)), False]
    out = ["| model, export | LiteRT kernels | TFLite bytes | gzip bytes | latency ms, batch 1 "
           "| × dense XNNPack | max diff vs Keras / max output |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for (name, builtin), ms in best.items():
        flat = flats[name]
        out.append(f"| {name} | {'builtin (no delegate)' if builtin else 'XNNPack (default)'} "
                   f"| {len(flat):,} | {len(gzip.compress(flat, 6)):,} | {ms:.2f} "
                   f"| {ms / base:.2f} | {diffs[name, builtin]:.2g} |")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--policy-only", action="store_true",
                        help="only the PruneForLatencyOnXNNPack table")
    args = parser.parse_args()
    if not args.policy_only:
        run(args.quick)
        print()
    policy_run(args.quick)
