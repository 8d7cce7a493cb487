"""Benchmark: low-rank factorization against magnitude pruning at the same parameter count.

What it measures
----------------
Two models, each trained in float first:

- the click-through model (`examples.click_model` on 24,000 `examples.click_logs`,
  20,000 to train, 4,000 to test; metric ROC AUC): its three embedding tables
  and its Dense towers;
- the digits CNN (`examples.digits_cnn`; metric top-1 accuracy on the test
  split): its two Dense layers only (the convolutions are left as they are).

For energy 0.8, 0.9 and 0.95, `tfcompress.factorization.factorize(energy=e)`
picks each layer's rank (a layer is split only where the pair has fewer
parameters than its kernel), then three models are fine-tuned the same
number of epochs (Adam 1e-3):

1. `low-rank`: the factorized model on the labels;
2. `low-rank + distil`: the factorized model trained by a
   `tfcompress.distillation.Distiller` from the float model
   (`BinaryDistillation` for clicks, `LogitsDistillation(T=4)` for digits,
   `student_loss_weight=0.5`);
3. `pruning`: the float model with `prune_low_magnitude(ConstantSparsity(s, frequency=10))`
   on the same layers, `s` chosen so that their non-zero weights equal the
   factor pair's parameters, `UpdatePruningStep`, then `tfcompress.strip`.

Reported per row: non-zero parameters of the whole model, int8 TFLite bytes
(`tfcompress.export.to_tflite(mode="int8")`, calibrated on 200 training
samples) raw and gzip'd (level 9: pruned zeros only pay off compressed), and
the Keras model's metric. One process, one run, seed 0.

How to run
----------
    python scripts/bench_factorization.py              # a few minutes on 2 cores
    python scripts/bench_factorization.py --quick      # smoke run
    python scripts/bench_factorization.py --out r.md   # where the tables are written
"""

import argparse
import dataclasses
import gzip
import os
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np
from benchlib import REPO_ROOT, log

ENERGIES = (0.8, 0.9, 0.95)
SEED = 0
CONFIGS = {
    "full": {"click_epochs": 6, "click_finetune": 3, "digits_epochs": 20, "digits_finetune": 8},
    "quick": {"click_epochs": 1, "click_finetune": 1, "digits_epochs": 2, "digits_finetune": 1},
}
METHODS = ("low-rank", "low-rank + distil", "pruning")


def nonzeros(model):
    return int(sum(np.count_nonzero(np.asarray(w)) for w in model.weights))


def int8_bytes(tfc, model, calibration):
    flat = tfc.export.to_tflite(model, mode="int8", representative_data=calibration)
    return len(flat), len(gzip.compress(flat, 9))


def matrix_params(model, names):
    """Σ m·n over the kernels/tables of the layers `names` of the float model."""
    return sum(int(np.prod(layer.weights[0].shape)) for layer in model.layers
               if layer.name in names)


@dataclasses.dataclass
class Task:
    """One model: its data, loss, metric, distillation loss and the layers to factorize."""

    name: str
    build: typing.Callable
    train: tuple
    test: tuple
    loss: object
    metric_name: str
    metric: typing.Callable
    distill_loss: typing.Callable
    layers: typing.Callable  # float model -> names to factorize (None: every one)
    calibration: object
    batch_size: int
    epochs: int
    finetune: int
    tie: float  # metric differences up to this are noise (digits: one test image)


def fit(keras, model, task, epochs, lr, callbacks=()):
    model.compile(keras.optimizers.Adam(lr), task.loss)
    model.fit(*task.train, batch_size=task.batch_size, epochs=epochs, verbose=0,
              callbacks=list(callbacks))
    return model


def run_task(tfc, keras, task):
    F = tfc.factorization
    keras.utils.set_random_seed(SEED)
    base = fit(keras, task.build(), task, task.epochs, 1e-2 if task.name == "click" else 3e-3)
    layers = task.layers(base)
    rows = [{"model": task.name, "energy": None, "method": "float", "factorized layers": 0,
             "non-zero parameters": nonzeros(base),
             **dict(zip(("int8 TFLite bytes", "gzip'd int8 bytes"),
                        int8_bytes(tfc, base, task.calibration))),
             task.metric_name: task.metric(base)}]
    log(task.name, f"float: {rows[-1]}")

    def teacher():
        twin = keras.models.clone_model(base)
        twin.set_weights(base.get_weights())
        return twin

    for energy in ENERGIES:
        factored = F.factorize(base, energy=energy, layers=layers)
        done = F.factorized_layers(factored)
        pair_params = sum(int(np.prod(factored.get_layer(n + suffix).weights[0].shape))
                          for n in done for suffix in ("", F.SUFFIX))
        sparsity = 1.0 - pair_params / matrix_params(base, done) if done else 0.0
        models = {}
        keras.utils.set_random_seed(SEED)
        models["low-rank"] = fit(keras, factored, task, task.finetune, 1e-3)

        keras.utils.set_random_seed(SEED)
        distiller = tfc.distillation.Distiller(
            teacher(), F.factorize(base, energy=energy, layers=layers), task.distill_loss(),
            student_loss_weight=0.5)
        fit(keras, distiller, task, task.finetune, 1e-3)
        models["low-rank + distil"] = distiller.student

        keras.utils.set_random_seed(SEED)
        leave = {layer.name: [] for layer in base.layers if layer.name not in done}
        pruned = tfc.pruning.prune_low_magnitude(
            base, pruning_schedule=tfc.pruning.ConstantSparsity(sparsity, begin_step=0,
                                                                frequency=10),
            weight_names=leave)
        fit(keras, pruned, task, task.finetune, 1e-3, [tfc.pruning.UpdatePruningStep()])
        models["pruning"] = tfc.strip(pruned)

        for method in METHODS:
            model = models[method]
            raw, packed = int8_bytes(tfc, model, task.calibration)
            rows.append({"model": task.name, "energy": energy, "method": method,
                         "factorized layers": len(done) if method != "pruning" else 0,
                         "non-zero parameters": nonzeros(model), "int8 TFLite bytes": raw,
                         "gzip'd int8 bytes": packed, task.metric_name: task.metric(model)})
            log(task.name, f"energy {energy} {method}: {rows[-1]} (sparsity {sparsity:.3f})")
    return rows


def click_task(keras, examples, config):
    from sklearn.metrics import roc_auc_score

    from tfcompress import distillation

    features, clicks = examples.click_logs(n=24000, seed=SEED)
    train = ({k: v[:20000] for k, v in features.items()}, clicks[:20000])
    test = ({k: v[20000:] for k, v in features.items()}, clicks[20000:])

    def auc(model):
        return float(roc_auc_score(test[1], np.asarray(model.predict(test[0], verbose=0,
                                                                      batch_size=1024))))

    return Task("click", examples.click_model, train, test, "binary_crossentropy", "AUC", auc,
                lambda: distillation.BinaryDistillation(), lambda model: None,
                {k: v[:200] for k, v in train[0].items()}, 256, config["click_epochs"],
                config["click_finetune"], 0.002)


def digits_task(keras, examples, config):
    from tfcompress import distillation

    (x, y), _, (xt, yt) = examples.digits(seed=SEED)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def accuracy(model):
        return float(np.mean(np.argmax(model.predict(xt, verbose=0), -1) == yt))

    def dense_layers(model):
        return [layer.name for layer in model.layers if type(layer) is keras.layers.Dense]

    return Task("digits", examples.digits_cnn, (x, y), (xt, yt), loss, "accuracy", accuracy,
                lambda: distillation.LogitsDistillation(temperature=4.0), dense_layers,
                x[:200], 32, config["digits_epochs"], config["digits_finetune"], 1.0 / len(yt))


def table(rows):
    import pandas as pd

    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "model"} for r in rows])
    frame["energy"] = frame["energy"].map(lambda e: "-" if e is None or e != e else f"{e:g}")
    return frame.to_markdown(index=False, floatfmt=".4f", intfmt=",")


def verdict(results):
    """One line: where low-rank (its better variant) loses to pruning at the same non-zeros."""
    parts = []
    for name, (task, rows) in results.items():
        metric, tie = task.metric_name, task.tie
        loses, ties, wins, smaller = [], [], [], []
        for energy in ENERGIES:
            at = {r["method"]: r for r in rows if r["energy"] == energy}
            best = max(at["low-rank"][metric], at["low-rank + distil"][metric])
            gap = best - at["pruning"][metric]
            (ties if abs(gap) <= tie else loses if gap < 0 else wins).append(
                f"{energy:g} ({gap:+.3f})")
            if at["pruning"]["gzip'd int8 bytes"] < at["low-rank"]["gzip'd int8 bytes"]:
                smaller.append(f"{energy:g}")
        parts.append(
            f"{name}: energies where low-rank loses on {metric}: {', '.join(loses) or 'none'}; "
            f"ties (within {tie:.3g}): {', '.join(ties) or 'none'}; wins: "
            f"{', '.join(wins) or 'none'}; where pruning's gzip'd int8 file is smaller: "
            f"{', '.join(smaller) or 'none'}")
    return "Verdict: " + "; ".join(parts) + "."


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few epochs: a smoke run")
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench_factorization.md",
                        help="the markdown report (default: %(default)s)")
    args = parser.parse_args()
    config = CONFIGS["quick" if args.quick else "full"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO_ROOT))
    import warnings

    import keras

    import tfcompress as tfc
    from tfcompress import examples

    warnings.filterwarnings("ignore", message=".*Statistics for quantized inputs.*")
    warnings.filterwarnings("ignore", message="factorize left")  # layers that save nothing
    start = time.perf_counter()
    results = {}
    for make in (click_task, digits_task):
        task = make(keras, examples, config)
        results[task.name] = (task, run_task(tfc, keras, task))
    lines = [f"## Low-rank factorization vs magnitude pruning ({'quick' if args.quick else 'full'}"
             f": {config}, seed {SEED})", ""]
    for name, (task, rows) in results.items():
        what = ("embedding tables and Dense towers" if name == "click"
                else "its two Dense layers")
        lines += [f"### {name} ({what}; metric {task.metric_name}, {task.finetune} fine-tune "
                  "epochs per row)", "", table(rows), ""]
    lines += [verdict(results)]
    lines += ["", f"Total wall time: {time.perf_counter() - start:.0f} s on {os.cpu_count()} "
              f"CPUs (load average {os.getloadavg()[0]:.2f} at the end)."]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text + "\n", encoding="utf-8")
    log("bench", f"written to {args.out}")


if __name__ == "__main__":
    main()
