"""Benchmark: tfcompress weight clustering (Keras 3) against TFMOT (tf_keras), head to head.

What it measures
----------------
The CNN of bench_pruning.py (Conv2D 16 -> Conv2D 32 -> MaxPool -> Dense 64 ->
Dense 10), the same initial weights, digits split and batch order in both
frameworks:

1. Accuracy and size after clustering. The dense model trains for
   `dense_epochs` (Adam 1e-3). For 8, 16 and 32 clusters, a copy of those
   weights is wrapped with `cluster_weights(number_of_clusters=k,
   cluster_centroids_init=KMEANS_PLUS_PLUS)` (TFMOT's default init),
   fine-tuned `finetune_epochs` (Adam 1e-4), stripped and converted to a float
   TFLite file, each framework its own way: `tfcompress.export.to_tflite`, and
   TFMOT guides' `TFLiteConverter.from_keras_model`. Reported: test accuracy,
   the most distinct values in any kernel, and the gzip'd TFLite bytes
   (clustering pays off under a compressor: each kernel holds k values).
2. CQAT. The 16-cluster model, stripped, is made quantization-aware with
   `Default8BitClusterPreserveQuantizeScheme`, trained `qat_epochs`
   (Adam 1e-5) and converted to int8 TFLite (Optimize.DEFAULT). Reported: its
   accuracy in LiteRT, gzip'd bytes and the most distinct int8 values in any
   output channel of its weights, read from the flatbuffer.
3. Train-step overhead: one epoch of `fit` timed on the unwrapped model and
   on the 16-cluster one, interleaved, after a warm-up; ratio of the minima.

Each framework runs in its own subprocess (importing TFMOT switches the
process to tf_keras); see bench_pruning.py. The whole protocol runs once per
seed in `SEEDS` (the digits split, the initial weights and the batch order
change with it; both frameworks share them): with ~270 test images, one image
is 0.37 points, and single runs of either framework move by a few images and
a few hundred bytes with the seed. Tables give the means and each seed's
value; the train-step timing runs on the first seed only.

How to run
----------
    python scripts/bench_clustering.py              # full run, 5 seeds, ~12 min on 2 cores
    python scripts/bench_clustering.py --seeds 1    # the first seed only
    python scripts/bench_clustering.py --quick      # smoke run, one seed

Targets, on the means over the seeds: accuracy >= TFMOT's at every cluster
count, and gzip'd TFLite bytes <= TFMOT's. The dense rows show what the two
exports cost before any clustering.
"""

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import (BATCH_SIZE, REPO_ROOT, epoch_timer, load_inputs, log, run_worker_process,
                      save_inputs, steps_per_epoch, top1_accuracy, train_dataset)
from bench_pruning import build_model

FRAMEWORKS = ("tfcompress", "tfmot")
CLUSTERS = (8, 16, 32)
#: One run per seed (the digits split, initial weights and batch order); the targets
#: compare means over the seeds (one test image is 0.37 points of accuracy).
SEEDS = (0, 1, 2, 3, 4)
CONFIGS = {
    "full": {"dense_epochs": 20, "finetune_epochs": 5, "qat_epochs": 2, "timed_epochs": 6},
    "quick": {"dense_epochs": 2, "finetune_epochs": 1, "qat_epochs": 1, "timed_epochs": 2},
}


def kernels(model):
    return [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]


def tflite(fw, model, int8=False):
    """Each framework's own way to a TFLite file: tfcompress's `export.to_tflite`, and
    the TFLite converter (TFMOT's guides' call) for tf_keras (its chatter kept off stdout)."""
    import contextlib
    import io

    if fw.name == "tfcompress":
        return fw.tfmot.export.to_tflite(model, mode="int8" if int8 else "float")
    converter = fw.tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [fw.tf.lite.Optimize.DEFAULT]
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def litert_accuracy(flatbuffer, x, y):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flatbuffer)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], (len(x),) + x.shape[1:])
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(np.float32))
    it.invoke()
    return float(np.mean(np.argmax(it.get_tensor(out["index"]), -1) == y))


def int8_values_per_channel(flatbuffer):
    """The most distinct int8 values in one output channel of any CONV_2D/FC weight."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flatbuffer)
    it.allocate_tensors()
    most = 0
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            w = it.get_tensor(op["inputs"][1])
            most = max(most, max(np.unique(w[c]).size for c in range(w.shape[0])))
    return most


class Framework:
    def __init__(self, name, tf, keras, tfmot, compile_kwargs):
        self.name, self.tf, self.keras, self.tfmot = name, tf, keras, tfmot
        self.clustering = tfmot.clustering.keras
        self.compile_kwargs = compile_kwargs

    def fresh(self, weights):
        model = build_model(self.keras)
        model.set_weights(weights)
        return model

    def compile(self, model, lr):
        model.compile(optimizer=self.keras.optimizers.Adam(lr),
                      loss=self.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      **self.compile_kwargs)
        return model

    def fit(self, model, dataset, spe, epochs):
        timer = epoch_timer(self.keras)
        model.fit(dataset, epochs=epochs, steps_per_epoch=spe, verbose=0, callbacks=[timer])
        return timer.times

    def cluster(self, model, k):
        c = self.clustering
        return c.cluster_weights(model, number_of_clusters=k,
                                 cluster_centroids_init=c.CentroidInitialization.KMEANS_PLUS_PLUS)


def run_protocol(fw, data, init_weights, config, seed, timed):
    x, y, x_test, y_test = data
    spe = steps_per_epoch(len(x))
    epochs = max(config["dense_epochs"], config["finetune_epochs"]) + 1
    dataset = train_dataset(fw.tf, x, y, epochs, seed)
    dense = fw.compile(fw.fresh(init_weights), 1e-3)
    fw.fit(dense, dataset, spe, config["dense_epochs"])
    weights = dense.get_weights()
    dense_bytes = len(gzip.compress(tflite(fw, dense), 9))
    result = {"dense_accuracy": top1_accuracy(dense, x_test, y_test),
              "dense_gzip_bytes": dense_bytes, "clustered": []}
    log(fw.name, f"dense {result['dense_accuracy']:.4f}, {dense_bytes} gzip'd bytes")
    stripped16 = None
    for k in CLUSTERS:
        clustered = fw.compile(fw.cluster(fw.fresh(weights), k), 1e-4)
        fw.fit(clustered, dataset, spe, config["finetune_epochs"])
        stripped = fw.clustering.strip_clustering(clustered)
        row = {"clusters": k, "test_accuracy": top1_accuracy(stripped, x_test, y_test),
               "max_unique": int(max(np.unique(w).size for w in kernels(stripped))),
               "gzip_bytes": len(gzip.compress(tflite(fw, stripped), 9))}
        result["clustered"].append(row)
        log(fw.name, f"{k} clusters: {row}")
        if k == 16:
            stripped16 = stripped
    q = fw.tfmot.quantization.keras
    annotated = q.quantize_annotate_model(stripped16)
    scheme = fw.tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme()
    qat = q.quantize_apply(annotated, scheme)
    fw.compile(qat, 1e-5)
    fw.fit(qat, dataset, spe, config["qat_epochs"])
    int8 = tflite(fw, qat, int8=True)
    result["cqat"] = {"clusters": 16, "test_accuracy": litert_accuracy(int8, x_test, y_test),
                      "gzip_bytes": len(gzip.compress(int8, 9)),
                      "max_int8_values_per_channel": int8_values_per_channel(int8)}
    log(fw.name, f"CQAT: {result['cqat']}")
    if timed:
        result["timing"] = time_epochs(fw, dataset, weights, config, spe)
    return result


def time_epochs(fw, dataset, weights, config, spe):
    unwrapped = fw.compile(fw.fresh(weights), 1e-4)
    wrapped = fw.compile(fw.cluster(fw.fresh(weights), 16), 1e-4)
    times = {"unwrapped": [], "wrapped": []}
    for _ in range(1 + config["timed_epochs"]):
        for kind, model in (("unwrapped", unwrapped), ("wrapped", wrapped)):
            times[kind] += fw.fit(model, dataset, spe, 1)["wall"]
    low = {k: float(np.min(v[1:])) for k, v in times.items()}
    return {"unwrapped_s": low["unwrapped"], "wrapped_s": low["wrapped"],
            "ratio": low["wrapped"] / low["unwrapped"]}


def load(name):
    if name == "tfcompress":
        sys.path.insert(0, str(REPO_ROOT))
        import keras
        import tensorflow as tf

        import tfcompress as tfmot

        return Framework(name, tf, keras, tfmot, {"jit_compile": False})
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    return Framework(name, tf, tf_keras, tfmot, {})


def run_worker(name, inputs_dir, config, seed):
    fw = load(name)
    fw.tf.random.set_seed(seed)
    data, weights = load_inputs(inputs_dir, "x_train", "y_train", "x_test", "y_test")
    result = run_protocol(fw, data, weights, config, seed, timed=seed == SEEDS[0])
    (inputs_dir / f"{name}.json").write_text(json.dumps(result, indent=2))


def prepare_inputs(inputs_dir, seed):
    sys.path.insert(0, str(REPO_ROOT))
    import keras

    from tfcompress import examples

    (x, y), _, (x_test, y_test) = examples.digits(seed=seed)
    keras.utils.set_random_seed(seed)
    save_inputs(inputs_dir, build_model(keras).get_weights(), x_train=x, y_train=y,
                x_test=x_test, y_test=y_test)


def _by_seed(values, fmt):
    return " / ".join(format(v, fmt) for v in values)


def tables(runs):
    """Markdown tables out of `runs` (`{seed: {framework: result}}`): means over the seeds,
    and each seed's value."""
    import pandas as pd

    seeds = sorted(runs)
    rows = []
    for name in FRAMEWORKS:
        per_seed = [runs[s][name] for s in seeds]
        cells = [("dense", [r["dense_accuracy"] for r in per_seed],
                  [r["dense_gzip_bytes"] for r in per_seed], None)]
        for i, k in enumerate(CLUSTERS):
            found = [r["clustered"][i] for r in per_seed]
            cells.append((k, [c["test_accuracy"] for c in found], [c["gzip_bytes"] for c in found],
                          max(c["max_unique"] for c in found)))
        for clusters, accuracy, size, unique in cells:
            rows.append({"framework": name, "clusters": clusters,
                         "test accuracy, mean": np.mean(accuracy),
                         "by seed": _by_seed(accuracy, ".4f"),
                         "gzip'd TFLite bytes, mean": int(round(np.mean(size))),
                         "by seed ": _by_seed(size, ","),
                         "max distinct values per kernel": "" if unique is None else unique})
    cqat = []
    for name in FRAMEWORKS:
        found = [runs[s][name]["cqat"] for s in seeds]
        cqat.append({"framework": name, "clusters": found[0]["clusters"],
                     "int8 test accuracy (LiteRT), mean": np.mean([c["test_accuracy"] for c in found]),
                     "by seed": _by_seed([c["test_accuracy"] for c in found], ".4f"),
                     "max int8 values per channel": max(c["max_int8_values_per_channel"]
                                                        for c in found),
                     "gzip'd int8 TFLite bytes, mean": int(round(np.mean([c["gzip_bytes"]
                                                                          for c in found])))})
    timed = runs[seeds[0]]
    timing = [{"framework": n, "epoch unwrapped (s)": timed[n]["timing"]["unwrapped_s"],
               "epoch clustered, 16 (s)": timed[n]["timing"]["wrapped_s"],
               "ratio": timed[n]["timing"]["ratio"]} for n in FRAMEWORKS]
    return [pd.DataFrame(t).to_markdown(index=False, floatfmt=".4f", intfmt=",")
            for t in (rows, cqat, timing)]


def verdict(runs):
    """The targets, on the means over the seeds."""
    lines = []
    for i, k in enumerate(CLUSTERS):
        mean = {name: {key: np.mean([runs[s][name]["clustered"][i][key] for s in runs])
                       for key in ("test_accuracy", "gzip_bytes")} for name in FRAMEWORKS}
        a, b = mean["tfcompress"], mean["tfmot"]
        acc = "MET" if a["test_accuracy"] >= b["test_accuracy"] else "MISSED"
        size = "MET" if a["gzip_bytes"] <= b["gzip_bytes"] else "MISSED"
        lines.append(f"- {k} clusters, means over {len(runs)} seeds: accuracy "
                     f"{a['test_accuracy']:.4f} >= TFMOT {b['test_accuracy']:.4f}: {acc}; gzip'd "
                     f"bytes {a['gzip_bytes']:,.0f} <= TFMOT {b['gzip_bytes']:,.0f}: {size}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, help=f"how many of {SEEDS} (default: all; "
                        "--quick: the first)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = CONFIGS["quick" if args.quick else "full"]
    if args.worker:
        run_worker(args.worker, args.inputs, config, args.seed)
        return
    start = time.perf_counter()
    seeds = SEEDS[:args.seeds or (1 if args.quick else len(SEEDS))]
    runs = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="bench_clustering_") as tmp:
            prepare_inputs(Path(tmp), seed)
            runs[seed] = {n: run_worker_process(__file__, n, Path(tmp), "--seed", str(seed),
                                                *(["--quick"] if args.quick else []))
                          for n in FRAMEWORKS}
    if args.out:
        args.out.write_text(json.dumps({"config": config, "runs": runs}, indent=2))
    accuracy, cqat, timing = tables(runs)
    print(f"## Clustering benchmark ({'quick' if args.quick else 'full'}: {config}, batch "
          f"{BATCH_SIZE}, seeds {', '.join(map(str, seeds))})\n")
    print(accuracy + "\n")
    print("CQAT (16 clusters, Default8BitClusterPreserveQuantizeScheme, int8 TFLite):\n")
    print(cqat + "\n")
    print(f"Train-step overhead (seed {seeds[0]}; min epoch over {config['timed_epochs']} "
          f"interleaved epochs, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} "
          "CPUs):\n")
    print(timing + "\n")
    print("Targets:")
    print("\n".join(verdict(runs)))
    print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
