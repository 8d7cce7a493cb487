"""Embedding tables at the scale they have: train-step time and peak memory, wrapped vs not.

A click model with one `Embedding(rows, 32)` table and a small tower
(Dense 64 relu, Dense 1 sigmoid), batch 256, ids drawn from a Zipf law
(alpha 1.2, folded into the table: most batches read a few thousand distinct
rows of a table of a million). Each configuration runs in its own process
(so peak memory is its own): the model unwrapped, `prune_low_magnitude`
(PolynomialDecay 0 → 0.8, a mask update every 50 steps: two inside the
timed window) and `quantize_model`. Reported: ms per train step over
`STEPS` steps after a warm-up fit, the ratio to the unwrapped model of the
same rows and optimizer, peak resident memory (ru_maxrss) and its ratio.

Targets (issue 16): at 10^6 rows, step time <= 1.2x and peak memory <= 1.25x
the unwrapped model, for pruning and QAT.

    python scripts/bench_embeddings.py            # 10^5 and 10^6 rows, Adam and SGD (~4 min)
    python scripts/bench_embeddings.py --quick    # 10^5 rows, Adam only
    python scripts/bench_embeddings.py --rows 1e7 # add 10^7 rows (needs ~12 GB)
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

STEPS = 100
BATCH = 256
DIM = 32
TECHNIQUES = ("unwrapped", "prune_low_magnitude", "quantize_model")
TARGET_TIME, TARGET_MEMORY = 1.2, 1.25


def worker(rows, optimizer, technique):
    """One configuration: `{ms_per_step, peak_mb}` on stdout as JSON."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras
    import numpy as np

    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    ids = keras.Input((), dtype="int32", name="id")
    vectors = keras.layers.Embedding(rows, DIM, name="table")(ids)
    hidden = keras.layers.Dense(64, activation="relu")(vectors)
    model = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(hidden))
    callbacks = []
    if technique == "prune_low_magnitude":
        schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=4 * STEPS,
                                               frequency=STEPS // 2)
        model = tfc.pruning.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks = [tfc.pruning.UpdatePruningStep()]
    elif technique == "quantize_model":
        model = tfc.quantization.quantize_model(model)
    rng = np.random.default_rng(0)
    n = BATCH * (STEPS + 10)
    x = ((rng.zipf(1.2, n) - 1) % rows).astype("int32")
    y = rng.integers(0, 2, n).astype("float32")
    model.compile(keras.optimizers.Adam(1e-3) if optimizer == "adam"
                  else keras.optimizers.SGD(0.1), "binary_crossentropy")
    model.fit(x[:BATCH * 10], y[:BATCH * 10], batch_size=BATCH, verbose=0, callbacks=callbacks)
    start = time.perf_counter()
    model.fit(x[BATCH * 10:], y[BATCH * 10:], batch_size=BATCH, verbose=0, callbacks=callbacks)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT" + json.dumps({"ms_per_step": 1000 * elapsed / STEPS, "peak_mb": peak}))


def run(rows, optimizer, technique):
    proc = subprocess.run([sys.executable, __file__, "--worker", str(rows), optimizer, technique],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=float, action="append", help="table rows (repeatable)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(int(args.worker[0]), args.worker[1], args.worker[2])
    import pandas as pd

    sizes = [int(r) for r in (args.rows or ([1e5] if args.quick else [1e5, 1e6]))]
    optimizers = ["adam"] if args.quick else ["adam", "sgd"]
    records, checks = [], []
    for rows in sizes:
        for optimizer in optimizers:
            base = None
            for technique in TECHNIQUES:
                print(f"[bench_embeddings] {rows:.0e} rows, {optimizer}, {technique}",
                      file=sys.stderr, flush=True)
                result = run(rows, optimizer, technique)
                if "error" in result:
                    records.append({"rows": f"{rows:,}", "optimizer": optimizer,
                                    "technique": technique, "ms / step": result["error"]})
                    continue
                base = base or result
                time_ratio = result["ms_per_step"] / base["ms_per_step"]
                memory_ratio = result["peak_mb"] / base["peak_mb"]
                records.append({"rows": f"{rows:,}", "optimizer": optimizer,
                                "technique": technique,
                                "ms / step": round(result["ms_per_step"], 1),
                                "step-time ratio": round(time_ratio, 2),
                                "peak MB": round(result["peak_mb"]),
                                "peak-memory ratio": round(memory_ratio, 2)})
                if rows >= 10 ** 6 and technique != "unwrapped":
                    checks.append((f"{rows:,} rows, {optimizer}, {technique}: step time "
                                   f"{time_ratio:.2f}x (target <= {TARGET_TIME}x), peak memory "
                                   f"{memory_ratio:.2f}x (target <= {TARGET_MEMORY}x)",
                                   time_ratio <= TARGET_TIME and memory_ratio <= TARGET_MEMORY))
    print(f"## Embedding tables: train-step time and peak memory (batch {BATCH}, dim {DIM}, "
          f"{STEPS} timed steps, Zipf(1.2) ids)\n")
    print(pd.DataFrame(records).to_markdown(index=False))
    if checks:
        print("\nTargets:")
        for text, ok in checks:
            print(f"- {'PASS' if ok else 'MISS'}: {text}")


if __name__ == "__main__":
    main()
