"""Size and speed of each TFLite export mode, on the digits CNN and the click-through model.

For each model: train it, export float, dynamic-range, float16 and full int8
flatbuffers, then prune a copy (80 % for the CNN, 70 % for the click model),
export it as int8 with the dense and with the sparse weight encoding, and run
`tfcompress.export.verify` on each. Prints a markdown table: bytes, gzip
bytes and LiteRT batch-1 latency (median `invoke`, one thread), each also as
a ratio to float, plus agreement with the Keras model and test accuracy.

    python scripts/bench_export.py            # about 2-3 minutes on 2 cores
    python scripts/bench_export.py --quick    # smoke run
"""

import argparse
import os
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
            flat = export.to_tflite(source, **kwargs)
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
           "| agreement with Keras | test accuracy |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, variant, r, base in rows:
        latency = f"{r.latency_ms:.4f}" + (" *" if r.notes else "")
        out.append(
            f"| {name} | {variant} | {r.bytes:,} | {r.bytes / base.bytes:.2f} "
            f"| {r.gzip_bytes:,} | {r.gzip_bytes / base.gzip_bytes:.2f} "
            f"| {latency} | {r.latency_ms / base.latency_ms:.2f} "
            f"| {r.agreement:.2%} ({r.agreement_kind}) | {r.artifact_accuracy:.3f} |")
    if any(r.notes for _, _, r, _ in rows):
        out.append("")
        out.append("\\* LiteRT's default XNNPACK delegate refused the graph; it ran on the "
                   "builtin kernels.")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    run(parser.parse_args().quick)
