"""Embedding tables: the methods' bytes and AUC on a DCN-v2, and the cost at scale.

Part 1, methods. A keras-rs DCN-v2 (user and item tables, dim 32,
concatenated, two `FeatureCross` layers, Dense 64, a sigmoid click; or with
`--model dlrm`: keras-rs `DotInteraction` of the user, item and an hour-of-day
table (a noise feature), Dense 64; `--model two_tower`: user and item towers
(Dense 64 relu, Dense 32) scored by their dot product and an item bias) on
synthetic click logs from a stated generative model: users (50,000) and
items (5,000) have latent factors `N(0, I/sqrt(8))` and items a bias
`N(0, 0.5)`; user and item ids are drawn from truncated Zipf laws
(alpha 1.1 for users, 1.2 for items: a few ids are most of the traffic,
most rows are rarely read); P(click) = sigmoid(6 u.v + b - 1). 400,000
training logs, 100,000 test logs. fp32 is trained 3 epochs (Adam 2e-3, batch
1024). Row-wise int8/int4 start from the trained model (QAT) and fine-tune 1
epoch (so does prune_rows: the 75 % of user rows read least in the epoch's
first half), beside "fp32 +1 epoch" (the same extra epoch in float, their
reference, also the model the converter quantizes); QR (mult, 10 quotient
rows and a tenth of the rows as remainders), hashed (2 hashes, 1/16 of each
table's rows) and mixed-dim (4 blocks from the training logs' id counts,
alpha 0.5; its int32 rank map counted in its bytes) are trained from scratch
like fp32 (3 epochs), fp32 their reference, also composed with row-wise int8
("qr + rowwise_int8": the small tables' rows stored int8). The converter's
own post-training quantization (dynamic range, and full int8 with 512
representative logs) is the baseline.
Columns: table bytes in the TFLite flatbuffer (what its GATHER ops read:
tables, scale codes), their ratio to fp32, test AUC in LiteRT and its change
from the row's reference. Targets: row-wise int4 <= 0.15x bytes at <= 0.002
AUC loss; QR or mixed-dim >= 8x smaller at <= 0.005 AUC loss; row-wise int8
>= the converter's int8 at equal bytes.

Part 2, scale: train-step time and peak memory, wrapped vs not.

A click model with one `Embedding(rows, 32)` table and a small tower
(Dense 64 relu, Dense 1 sigmoid), batch 256, ids drawn from a Zipf law
(alpha 1.2, folded into the table: most batches read a few thousand distinct
rows of a table of a million): the model unwrapped, `prune_low_magnitude`
(PolynomialDecay 0 -> 0.8 until the last timed step, a mask update every 50 steps:
two inside each timed window), `quantize_model`, and `compress_embeddings` with
`rowwise_int8` (row-wise QAT) and `qr` (default buckets: 2·sqrt(rows) rows).
Each configuration runs in its own process, `PROCESSES` times in turn:
1. alone, for its peak resident memory (ru_maxrss after a warm-up fit and
   one timed fit), reported with its ratio to the unwrapped model's;
2. then beside a fresh unwrapped model built in the same process: `ROUNDS`
   timed fits of `STEPS` steps of each, interleaved. The step-time ratio is
   the configuration's fastest fit over the unwrapped model's fastest, both
   from the same process. (This machine's speed shifts between whole
   processes by up to 1.6x, for the unwrapped model as much as for the rest,
   so a ratio of two processes' timings measures that shift as well.)
Across processes, the fastest step times, the smallest peaks and the mean of the
step-time ratios are kept.

Targets (issue 16): at 10^6 rows, step time <= 1.2x and peak memory <= 1.25x
the unwrapped model, for pruning, row-wise QAT and QR (`quantize_model` is
measured beside them, with no target: its per-tensor range comes from each
row's extremes as training last read it, kept in blocks, so that a step
reduces only the blocks its batch read and the blocks' extremes); at 10^7 rows (`--rows 1e7`), that every configuration fits
and trains.

    python scripts/bench_embeddings.py            # both parts (~75 min on 2 cores)
    python scripts/bench_embeddings.py --quick    # smoke run: small logs, 10^5 rows, Adam
    python scripts/bench_embeddings.py --model dcn --model dlrm --model two_tower
    python scripts/bench_embeddings.py --methods-only --model dcn --model dlrm
    python scripts/bench_embeddings.py --scale-only --rows 1e7 --optimizer sgd --processes 1
    python scripts/bench_embeddings.py --scale-only
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

STEPS = 100
ROUNDS = 6
PROCESSES = 2
BATCH = 256
DIM = 32
TECHNIQUES = ("unwrapped", "prune_low_magnitude", "quantize_model", "rowwise_int8", "qr")
TARGET_TIME, TARGET_MEMORY = 1.2, 1.25
#: The techniques the targets name (`quantize_model`, per-tensor QAT of a table, has none;
#: `rowwise_int8` is the QAT for tables).
TARGETED = ("prune_low_magnitude", "rowwise_int8", "qr")


def worker(rows, optimizer, technique):
    """One configuration: `{ms_per_step, base_ms_per_step, peak_mb}` on stdout as JSON."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras
    import numpy as np

    import tfcompress as tfc

    def build(technique):
        keras.utils.set_random_seed(0)
        ids = keras.Input((), dtype="int32", name="id")
        vectors = keras.layers.Embedding(rows, DIM, name="table")(ids)
        hidden = keras.layers.Dense(64, activation="relu")(vectors)
        model = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(hidden))
        callbacks = []
        if technique == "prune_low_magnitude":
            schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0,
                                                   end_step=(ROUNDS + 2) * STEPS,
                                                   frequency=STEPS // 2)
            model = tfc.pruning.prune_low_magnitude(model, pruning_schedule=schedule)
            callbacks = [tfc.pruning.UpdatePruningStep()]
        elif technique == "quantize_model":
            model = tfc.quantization.quantize_model(model)
        elif technique in ("rowwise_int8", "qr"):
            model = tfc.embeddings.compress_embeddings(model, technique)
        model.compile(keras.optimizers.Adam(1e-3) if optimizer == "adam"
                      else keras.optimizers.SGD(0.1), "binary_crossentropy")
        return model, callbacks

    rng = np.random.default_rng(0)
    n = BATCH * (STEPS + 10)
    x = ((rng.zipf(1.2, n) - 1) % rows).astype("int32")
    y = rng.integers(0, 2, n).astype("float32")

    def timed(model, callbacks):
        start = time.perf_counter()
        model.fit(x[BATCH * 10:], y[BATCH * 10:], batch_size=BATCH, verbose=0,
                  callbacks=callbacks)
        return 1000 * (time.perf_counter() - start) / STEPS

    model, callbacks = build(technique)
    model.fit(x[:BATCH * 10], y[:BATCH * 10], batch_size=BATCH, verbose=0, callbacks=callbacks)
    times = [timed(model, callbacks)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before a second model
    base_times = []
    if technique == "unwrapped":
        times += [timed(model, callbacks) for _ in range(ROUNDS - 1)]
    else:
        base = build("unwrapped")
        base[0].fit(x[:BATCH * 10], y[:BATCH * 10], batch_size=BATCH, verbose=0)
        times = []  # only the interleaved fits: each beside the unwrapped model's
        for _ in range(ROUNDS):
            times.append(timed(model, callbacks))
            base_times.append(timed(*base))
    result = {"ms_per_step": min(times), "peak_mb": peak}
    if base_times:
        result["base_ms_per_step"] = min(base_times)
    print("RESULT" + json.dumps(result))


USERS, ITEMS, DIM_M = 50_000, 5_000, 32


def litert_auc(flatbuffer, x, y):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from sklearn.metrics import roc_auc_score

    runner = Interpreter(model_content=flatbuffer).get_signature_runner()
    names = {k: next(n for n in runner.get_input_details() if k in n) for k in x}
    out = []
    for start in range(0, len(y), 4096):
        result = runner(**{names[k]: v[start:start + 4096] for k, v in x.items()})
        out.append(np.asarray(next(iter(result.values()))).reshape(-1))
    return roc_auc_score(y, np.concatenate(out))


def methods(quick, arch="dcn"):
    """Part 1: one row per method (see the module docstring)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras
    import numpy as np
    import tensorflow as tf

    import tfcompress as tfc
    from tfcompress import examples

    n, n_test = (40_000, 20_000) if quick else (400_000, 100_000)
    epochs = 1 if quick else 3
    x, y = examples.zipf_click_logs(n, users=USERS, items=ITEMS, seed=1)
    x_test, y_test = examples.zipf_click_logs(n_test, users=USERS, items=ITEMS, seed=2)
    if arch != "dlrm":
        del x["hour"], x_test["hour"]
    frequencies = {"user_table": np.bincount(x["user"], minlength=USERS),
                   "item_table": np.bincount(x["item"], minlength=ITEMS)}

    def dcn(keras):
        return examples.recommender(arch, users=USERS, items=ITEMS, dim=DIM_M)

    def fit(model, epochs, lr=2e-3):
        model.compile(keras.optimizers.Adam(lr), "binary_crossentropy")
        model.fit(x, y, batch_size=1024, epochs=epochs, verbose=0)
        return model

    keras.utils.set_random_seed(0)
    log("methods", "fp32")
    dense = fit(dcn(keras), epochs)
    rows = []

    def row(name, flatbuffer):
        rows.append({"method": name, "table bytes": tfc.export.census.table_bytes(flatbuffer),
                     "AUC": litert_auc(flatbuffer, x_test, y_test)})

    row("fp32", tfc.export.to_tflite(dense))
    longer = keras.models.clone_model(dense)
    longer.set_weights(dense.get_weights())
    longer = fit(longer, 1, lr=1e-3)
    row("fp32 +1 epoch", tfc.export.to_tflite(longer))
    row("converter dynamic range", tfc.export.to_tflite(longer, mode="dynamic"))
    row("converter int8 (per-tensor table)",
        tfc.export.to_tflite(longer, mode="int8",
                             representative_data={k: v[:512] for k, v in x.items()}))
    for method in ("rowwise_int8", "rowwise_int4"):
        log("methods", method)
        keras.utils.set_random_seed(0)
        model = fit(tfc.embeddings.compress_embeddings(dense, method), 1, lr=1e-3)
        row(method, tfc.export.to_tflite(tfc.strip(model)))
    log("methods", "prune_rows")  # the 75 % of user rows read least, pruned while fine-tuning
    keras.utils.set_random_seed(0)
    steps = len(y) // 1024  # reads counted over half the epoch, then pruned twice
    schedule = tfc.pruning.ConstantSparsity(0.75, begin_step=steps // 2,
                                            frequency=max(steps // 4, 1))
    model = tfc.embeddings.compress_embeddings(dense, "prune_rows", layers=["user_table"],
                                               pruning_schedule=schedule)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    model.fit(x, y, batch_size=1024, epochs=1, verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    row("prune_rows (75 % of user rows)", tfc.export.to_tflite(tfc.strip(model)))
    for method in ("qr", "hashed", "mixed_dim", "qr + rowwise_int8", "mixed_dim + rowwise_int8"):
        log("methods", method)
        keras.utils.set_random_seed(0)
        model = dcn(keras)
        first = method.split(" + ")[0]
        for table, count in (("user_table", USERS), ("item_table", ITEMS)):
            # QR: 10 quotient rows and count/10 remainder rows (~10x fewer);
            # hashed: 1/16 of the rows; mixed-dim: 4 blocks, dims by the 0.5 power rule
            options = {"qr": {"operation": "mult", "num_buckets": -(-count // 10)},
                       "hashed": {"num_buckets": count // 16},
                       "mixed_dim": {"frequencies": frequencies, "alpha": 0.5}}[first]
            model = tfc.embeddings.compress_embeddings(model, first, layers=[table], **options)
        if " + " in method:  # row-wise int8 on the small tables, trained with them
            model = tfc.embeddings.compress_embeddings(model, "rowwise_int8",
                                                       layers=["user_table", "item_table"])
        row(method, tfc.export.to_tflite(tfc.strip(fit(model, epochs))))
    del tf
    reference = {name: "fp32 +1 epoch" for name in (
        "rowwise_int8", "rowwise_int4", "prune_rows (75 % of user rows)", "fp32 +1 epoch",
        "converter dynamic range",
        "converter int8 (per-tensor table)")}
    by = {r["method"]: r for r in rows}
    for r in rows:
        base = by[reference.get(r["method"], "fp32")]
        r["ratio to fp32"] = r["table bytes"] / by["fp32"]["table bytes"]
        r["reference"] = base["method"]
        r["AUC change"] = r["AUC"] - base["AUC"]
    return rows


def log(part, message):
    print(f"[bench_embeddings {part}] {message}", file=sys.stderr, flush=True)


def run(rows, optimizer, technique):
    proc = subprocess.run([sys.executable, __file__, "--worker", str(rows), optimizer, technique],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def run_in_turn(rows, optimizer, techniques, processes=PROCESSES):
    """`{technique: result}`: every technique's process `processes` times, in turn. Kept:
    the fastest step and the smallest peak, and the mean of the processes' step-time
    ratios (each of one process's own timings; an error ends that technique)."""
    runs = {}
    for _ in range(processes):
        for technique in techniques:
            if "error" in runs.get(technique, [{}])[-1]:
                continue
            print(f"[bench_embeddings] {rows:.0e} rows, {optimizer}, {technique}",
                  file=sys.stderr, flush=True)
            runs.setdefault(technique, []).append(run(rows, optimizer, technique))
    results = {}
    for technique, found in runs.items():
        if "error" in found[-1]:
            results[technique] = found[-1]
            continue
        results[technique] = {key: min(r[key] for r in found) for key in found[0]}
        results[technique]["time_ratio"] = sum(
            r["ms_per_step"] / r.get("base_ms_per_step", r["ms_per_step"]) for r in found
        ) / len(found)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=float, action="append", help="table rows (repeatable)")
    parser.add_argument("--scale-only", action="store_true")
    parser.add_argument("--methods-only", action="store_true")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), action="append",
                        help="the scale part's optimizers (repeatable; default both)")
    parser.add_argument("--technique", choices=TECHNIQUES[1:], action="append",
                        help="the scale part's techniques beside 'unwrapped' (repeatable; "
                             "default all)")
    parser.add_argument("--model", choices=("dcn", "dlrm", "two_tower"), action="append",
                        help="part 1's model (repeatable; default dcn)")
    parser.add_argument("--processes", type=int, default=PROCESSES,
                        help=f"the scale part's processes per configuration (default {PROCESSES})")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(int(args.worker[0]), args.worker[1], args.worker[2])
    import pandas as pd

    for arch in ([] if args.scale_only else args.model or ["dcn"]):
        table = pd.DataFrame(methods(args.quick, arch))
        title = {"dcn": "a keras-rs DCN-v2", "dlrm": "a keras-rs DLRM (DotInteraction)",
                 "two_tower": "a two-tower model (dot product)"}[arch]
        print(f"## Embedding-table methods on {title} (users {USERS:,}, items "
              f"{ITEMS:,}, dim {DIM_M}; Zipf ids; AUC in LiteRT on held-out logs)\n")
        print(table.to_markdown(index=False, floatfmt=".4f"))
        by = {r["method"]: r for r in table.to_dict("records")}
        print("\nTargets:")
        for text, ok in (
                (f"rowwise_int4 bytes {by['rowwise_int4']['ratio to fp32']:.3f}x (<= 0.15x), "
                 f"AUC change {by['rowwise_int4']['AUC change']:+.4f} (>= -0.002)",
                 by["rowwise_int4"]["ratio to fp32"] <= 0.15
                 and by["rowwise_int4"]["AUC change"] >= -0.002),
                ("qr or mixed_dim >= 8x smaller at an AUC change >= -0.005: " + ", ".join(
                    f"{m} {1 / by[m]['ratio to fp32']:.1f}x, {by[m]['AUC change']:+.4f}"
                    for m in ("qr", "mixed_dim")),
                 any(by[m]["ratio to fp32"] <= 1 / 8 and by[m]["AUC change"] >= -0.005
                     for m in ("qr", "mixed_dim"))),
                (f"rowwise_int8 AUC {by['rowwise_int8']['AUC']:.4f} >= converter int8 "
                 f"{by['converter int8 (per-tensor table)']['AUC']:.4f} at "
                 f"{by['rowwise_int8']['ratio to fp32']:.3f}x vs "
                 f"{by['converter int8 (per-tensor table)']['ratio to fp32']:.3f}x bytes",
                 by["rowwise_int8"]["AUC"] >= by["converter int8 (per-tensor table)"]["AUC"])):
            print(f"- {'PASS' if ok else 'MISS'}: {text}")
        print()

    if args.methods_only:
        return
    sizes = [int(r) for r in (args.rows or ([1e5] if args.quick else [1e5, 1e6]))]
    optimizers = args.optimizer or (["adam"] if args.quick else ["adam", "sgd"])
    techniques = ("unwrapped", *(args.technique or TECHNIQUES[1:]))
    records, checks = [], []
    for rows in sizes:
        for optimizer in optimizers:
            base = None
            for technique, result in run_in_turn(rows, optimizer, techniques,
                                                      args.processes).items():
                if "error" in result:
                    records.append({"rows": f"{rows:,}", "optimizer": optimizer,
                                    "technique": technique, "ms / step": result["error"]})
                    continue
                base = base or result
                time_ratio = result["time_ratio"]
                memory_ratio = result["peak_mb"] / base["peak_mb"]
                records.append({"rows": f"{rows:,}", "optimizer": optimizer,
                                "technique": technique,
                                "ms / step": round(result["ms_per_step"], 1),
                                "unwrapped ms / step, same process": round(
                                    result.get("base_ms_per_step", result["ms_per_step"]), 1),
                                "step-time ratio": round(time_ratio, 2),
                                "peak MB": round(result["peak_mb"]),
                                "peak-memory ratio": round(memory_ratio, 2)})
                if rows == 10 ** 6 and technique in TARGETED:  # the targets' size
                    checks.append((f"{rows:,} rows, {optimizer}, {technique}: step time "
                                   f"{time_ratio:.2f}x (target <= {TARGET_TIME}x), peak memory "
                                   f"{memory_ratio:.2f}x (target <= {TARGET_MEMORY}x)",
                                   time_ratio <= TARGET_TIME and memory_ratio <= TARGET_MEMORY))
    print(f"## Embedding tables: train-step time and peak memory (batch {BATCH}, dim {DIM}, "
          f"{STEPS} timed steps, Zipf(1.2) ids)\n")
    print(pd.DataFrame(records).to_markdown(index=False))
    for rows in sizes:
        if rows > 10 ** 6:  # no time target here: does every configuration fit and train?
            mine = [r for r in records if r["rows"] == f"{rows:,}"]
            trained = [r for r in mine if "peak MB" in r]
            print(f"\n{rows:,} rows: {len(trained)} of {len(mine)} configurations trained, "
                  f"the largest peak {max((r['peak MB'] for r in trained), default=0):,} MB")
    if checks:
        print("\nTargets:")
        for text, ok in checks:
            print(f"- {'PASS' if ok else 'MISS'}: {text}")


if __name__ == "__main__":
    main()
