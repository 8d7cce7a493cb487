"""Benchmark: tfcompress distillation vs label-only training and keras.distillation.Distiller.

Prints markdown tables, mean ± std (ddof=1) over seeds:

1. digits (scikit-learn, real): teacher `digits_cnn(width=36)` (104k params),
   student `digits_cnn(width=4)` (9.4k, < 1/10). (a) the student sees every
   training label; (b) the student sees 10 % of the training images (the
   teacher was trained on all). Rows: label-only, tfcompress `Distiller` +
   `LogitsDistillation`, `keras.distillation.Distiller` with its default
   `LogitsDistillation(T)` and with `loss=keras.losses.KLDivergence()`; same
   teacher, student initialization, T=4 and student weight 0.3 everywhere.
   A diagnosis table shows what Keras' default loss computes.
2. click logs (synthetic, `examples.click_logs`: latent factors, see there):
   teacher `click_model(dim=32)` trained on all 30k training logs, student
   `click_model(dim=4)` on the latest 20 %; test AUC on 10k held-out logs.
3. listwise ranking (synthetic, generator below): NDCG@10 of a small scorer
   trained on 5 % of the queries, label-only vs listwise / pairwise
   distillation from a large scorer trained on all queries.
4. pipeline: the digits teacher → distil into `digits_cnn(width=16)` while
   pruning to 80 % and training quantization-aware, all in one fit →
   `tfcompress.export.to_tflite(mode="int8")`; accuracy beside the teacher's.

Usage: `python scripts/bench_distill.py [--seeds 3] [--quick] [--only digits,clicks,ranking,pipeline]`
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress import distillation as D  # noqa: E402
from tfcompress import examples  # noqa: E402

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
T, STUDENT_WEIGHT = 4.0, 0.3
SPE = 8  # steps_per_execution: less Python per step on 2 cores (the math is unchanged)


# -- small utilities ------------------------------------------------------------------------
def fresh_copy(model):
    """Same architecture, same initial weights (every method starts equal)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))


def table(title, rows, columns):
    """rows: {name: {column: [values over seeds]}} → markdown, mean ± std."""
    out = [f"\n### {title}\n", "| method | " + " | ".join(columns) + " |",
           "|---|" + "---|" * len(columns)]
    for name, cells in rows.items():
        parts = []
        for column in columns:
            values = np.asarray(cells.get(column, []), dtype=float)
            integers = values.size and np.all(values == np.round(values)) and values.max() > 100
            fmt = "{:,.0f}" if integers else "{:.3f}"
            if values.size == 0:
                parts.append("–")
            elif values.size == 1 or (integers and values.std() == 0):
                parts.append(fmt.format(values.mean()))
            else:
                parts.append(f"{fmt.format(values.mean())} ± {fmt.format(values.std(ddof=1))}")
        out.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(out)


def add(rows, name, column, value):
    rows.setdefault(name, {}).setdefault(column, []).append(value)


# -- 1. digits ---------------------------------------------------------------------------------
def train_digits_teacher(x, y, epochs):
    teacher = examples.digits_cnn(width=36)
    teacher.compile(keras.optimizers.Adam(3e-3), CE, steps_per_execution=SPE)
    teacher.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return teacher


def digits_methods(teacher, init, x, y, epochs, batch):
    """{method: trained student} for the four methods, from the same init."""
    out = {}
    student = fresh_copy(init)
    student.compile(keras.optimizers.Adam(3e-3), CE, steps_per_execution=SPE)
    student.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    out["label-only"] = student
    variants = {
        "tfcompress Distiller (LogitsDistillation)":
            lambda s: D.Distiller(teacher, s, D.LogitsDistillation(T),
                                  student_loss_weight=STUDENT_WEIGHT),
        "keras Distiller, default LogitsDistillation(T)":
            lambda s: keras.distillation.Distiller(
                teacher, s, keras.distillation.LogitsDistillation(T),
                student_loss_weight=STUDENT_WEIGHT),
        "keras Distiller, loss=KLDivergence()":
            lambda s: keras.distillation.Distiller(
                teacher, s, keras.distillation.LogitsDistillation(
                    T, loss=keras.losses.KLDivergence()),
                student_loss_weight=STUDENT_WEIGHT),
    }
    for name, make in variants.items():
        distiller = make(fresh_copy(init))
        distiller.compile(keras.optimizers.Adam(3e-3), CE, steps_per_execution=SPE)
        distiller.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
        out[name] = distiller.student
    return out


def keras_default_diagnosis(teacher, student, x):
    """What keras' default LogitsDistillation computes on one batch, vs Hinton's KD."""
    t = np.asarray(teacher(x, training=False), "float64")
    s = np.asarray(student(x, training=False), "float64")
    keras_value = float(keras.distillation.LogitsDistillation(T).compute_loss(
        t.astype("float32"), s.astype("float32")))
    clip = lambda v: np.clip(v, 1e-7, 1.0)  # noqa: E731  keras.losses.kl_divergence, on logits/T
    raw_logit_kl = float(np.mean(np.sum(clip(t / T) * np.log(clip(t / T) / clip(s / T)), -1)))

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(t / T), softmax(s / T)
    hinton = float(np.mean(np.sum(p * np.log(p / q), -1)) * T * T)
    ours = float(D.LogitsDistillation(T).compute_loss(t.astype("float32"), s.astype("float32")))
    return keras_value, raw_logit_kl, hinton, ours


def logit_shape_stats(student, x):
    """Mean count of logits within 10 % of T (the cap of keras' clipped term), and top-2 gap."""
    z = np.asarray(student.predict(x, verbose=0, batch_size=256))
    near_cap = float(np.mean(np.sum(z >= 0.9 * T, -1)))
    top = np.sort(z, -1)
    return near_cap, float(np.mean(top[:, -1] - top[:, -2]))


def bench_digits(seeds, quick, teachers_out):
    rows = {"a": {}, "b": {}}
    teachers, diag, shape = {}, {}, {}
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        (x, y), _, (xt, yt) = examples.digits(seed)
        teacher = train_digits_teacher(x, y, 3 if quick else 12)
        teachers_out[seed] = teacher
        init = examples.digits_cnn(width=4)
        assert init.count_params() * 10 <= teacher.count_params(), "student must be <= 1/10"
        add(teachers, "teacher", "test accuracy", accuracy(teacher, xt, yt))
        n10 = len(x) // 10
        # (b): the 10 % subset is tiled 8x so that one epoch is 8 passes
        # (the same training steps as 8x the epochs, with less epoch overhead).
        x10, y10 = np.tile(x[:n10], (8, 1, 1, 1)), np.tile(y[:n10], 8)
        setups = {"a": (x, y, 2 if quick else 12, 64),
                  "b": (x10, y10, 2 if quick else 9, 32)}
        for key, (xs, ys, epochs, batch) in setups.items():
            for name, student in digits_methods(teacher, init, xs, ys, epochs, batch).items():
                add(rows[key], name, "test accuracy", accuracy(student, xt, yt))
                if key == "b":
                    near, gap = logit_shape_stats(student, xt)
                    add(shape, name, "logits ≥ 0.9·T per image", near)
                    add(shape, name, "top-1 − top-2 logit", gap)
        k, raw, hinton, ours = keras_default_diagnosis(teacher, init, xt[:64])
        for column, value in (("keras LogitsDistillation(T) default", k),
                              ("KL of clipped raw logits/T, no T²", raw),
                              ("Hinton KL(p_T‖q_T)·T²", hinton),
                              ("tfcompress LogitsDistillation(T)", ours)):
            add(diag, "untrained student vs teacher, 64 test images", column, value)
        print(f"  digits seed {seed} done", flush=True)
    params = (examples.digits_cnn(width=36).count_params(), examples.digits_cnn(width=4).count_params())
    print(f"\nDigits: teacher digits_cnn(width=36) {params[0]:,} params, student "
          f"digits_cnn(width=4) {params[1]:,} params ({params[1] / params[0]:.1%}); "
          f"T={T}, student_loss_weight={STUDENT_WEIGHT}.")
    print(table("Digits teacher", teachers, ["test accuracy"]))
    print(table("Digits (a): student sees all training labels", rows["a"], ["test accuracy"]))
    print(table("Digits (b): student sees 10 % of the training images", rows["b"],
                ["test accuracy"]))
    print(table("Why keras' default fails: loss values on one batch", diag, list(
        next(iter(diag.values())).keys())))
    print(table("Student logits in (b) (keras' clipped term pushes logits up to T)", shape,
                ["logits ≥ 0.9·T per image", "top-1 − top-2 logit"]))


# -- 2. click logs ----------------------------------------------------------------------------------
def bench_clicks(seeds, quick):
    from sklearn.metrics import roc_auc_score

    rows = {}
    n = 8000 if quick else 40000
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        features, clicks = examples.click_logs(n=n, seed=seed)
        cut = int(0.75 * n)
        train = {k: v[:cut] for k, v in features.items()}
        test = {k: v[cut:] for k, v in features.items()}
        y, yt = clicks[:cut], clicks[cut:]
        recent = slice(int(0.8 * cut), cut)  # the student's logs: the latest 20 %
        small = {k: v[recent] for k, v in train.items()}
        bce = keras.losses.BinaryCrossentropy()
        teacher = examples.click_model(dim=32)
        teacher.compile(keras.optimizers.Adam(3e-3), bce, steps_per_execution=SPE)
        teacher.fit(train, y, batch_size=512, epochs=2 if quick else 5, verbose=0)
        auc = lambda m: roc_auc_score(yt, np.asarray(m.predict(test, verbose=0, batch_size=2048)).ravel())  # noqa: E731
        add(rows, "teacher click_model(dim=32), all logs", "test AUC", auc(teacher))
        init = examples.click_model(dim=4)
        epochs = 3 if quick else 8
        label_only = fresh_copy(init)
        label_only.compile(keras.optimizers.Adam(3e-3), bce, steps_per_execution=SPE)
        label_only.fit(small, y[recent], batch_size=256, epochs=epochs, verbose=0)
        add(rows, "student dim=4, label-only", "test AUC", auc(label_only))
        distiller = D.Distiller(teacher, fresh_copy(init), D.BinaryDistillation(),
                                student_loss_weight=0.5)
        distiller.compile(keras.optimizers.Adam(3e-3), bce, steps_per_execution=SPE)
        distiller.fit(small, y[recent], batch_size=256, epochs=epochs, verbose=0)
        add(rows, "student dim=4, BinaryDistillation (w=0.5)", "test AUC", auc(distiller.student))
        print(f"  clicks seed {seed} done", flush=True)
    print(f"\nClick logs: examples.click_logs(n={n}); 75 % train / 25 % test; the student "
          "trains on the latest 20 % of the training logs; "
          f"params teacher {examples.click_model(dim=32).count_params():,}, "
          f"student {examples.click_model(dim=4).count_params():,}.")
    print(table("Click-through AUC", rows, ["test AUC"]))


# -- 3. listwise ranking ----------------------------------------------------------------------------
def ranking_data(queries, seed, list_size=20, dim=16, noise=1.0):
    """Generative model (stated): each candidate of a query has features
    x ~ N(0, I_16); hidden utility u = x·w + ((x·U)²).sum() / 8 + ε, with
    w ~ N(0, I/16) and U ~ N(0, I/16) of shape 16×4 (a latent quadratic
    taste), ε ~ N(0, 1). Graded relevance 0..4 thresholds u at the
    50/75/90/97 % quantiles of its distribution. Models see x only. w, U and
    the thresholds are fixed; `seed` draws the queries."""
    fixed = np.random.default_rng(1000)
    w = fixed.normal(0, 1 / np.sqrt(dim), dim)
    u_mat = fixed.normal(0, 1 / np.sqrt(dim), (dim, 4))

    def utility(x, rng):
        return x @ w + ((x @ u_mat) ** 2).sum(-1) / 8 + rng.normal(0, noise, x.shape[:-1])

    reference = np.random.default_rng(1001)
    thresholds = np.quantile(utility(reference.normal(size=(100000, dim)), reference),
                             [0.5, 0.75, 0.9, 0.97])
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(queries, list_size, dim)).astype("float32")
    rel = np.digitize(utility(x, rng), thresholds).astype("float32")
    return x, rel


def listnet_targets(rel):
    gains = 2.0 ** rel - 1.0 + 1e-3
    return (gains / gains.sum(-1, keepdims=True)).astype("float32")


def ndcg_at(scores, rel, k=10):
    order = np.argsort(-scores, -1)[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = ((2.0 ** np.take_along_axis(rel, order, -1) - 1) * discounts).sum(-1)
    ideal = ((2.0 ** np.sort(rel, -1)[:, ::-1][:, :k] - 1) * discounts).sum(-1)
    keep = ideal > 0
    return float(np.mean(dcg[keep] / ideal[keep]))


def scorer(widths, name, list_size=20, dim=16):
    inputs = keras.Input((list_size, dim), name="candidates")
    h = inputs
    for width in widths:
        h = keras.layers.Dense(width, activation="relu")(h)
    scores = keras.layers.Reshape((list_size,))(keras.layers.Dense(1)(h))
    return keras.Model(inputs, scores, name=name)


def bench_ranking(seeds, quick):
    rows = {}
    listnet = keras.losses.CategoricalCrossentropy(from_logits=True)
    n_train = 600 if quick else 3000
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        x, rel = ranking_data(n_train, seed)
        xt, relt = ranking_data(1000, seed + 500)
        y = listnet_targets(rel)
        teacher = scorer([128, 128], "teacher")
        teacher.compile(keras.optimizers.Adam(2e-3), listnet, steps_per_execution=SPE)
        teacher.fit(x, y, batch_size=64, epochs=3 if quick else 10, verbose=0)
        ndcg = lambda m: ndcg_at(np.asarray(m.predict(xt, verbose=0, batch_size=512)), relt)  # noqa: E731
        add(rows, "teacher MLP 128-128, all queries", "test NDCG@10", ndcg(teacher))
        # the student's 5 % of the queries, tiled 4x (one epoch = 4 passes)
        xs, ys = np.tile(x[:n_train // 20], (4, 1, 1)), np.tile(y[:n_train // 20], (4, 1))
        init = scorer([8], "student")
        epochs = 3 if quick else 15
        label_only = fresh_copy(init)
        label_only.compile(keras.optimizers.Adam(3e-3), listnet, steps_per_execution=SPE)
        label_only.fit(xs, ys, batch_size=32, epochs=epochs, verbose=0)
        add(rows, "student MLP 8, label-only (ListNet)", "test NDCG@10", ndcg(label_only))
        for name, losses in (("ListwiseDistillation", [D.ListwiseDistillation()]),
                             ("PairwiseDistillation", [D.PairwiseDistillation()])):
            distiller = D.Distiller(teacher, fresh_copy(init), losses, student_loss_weight=0.3)
            distiller.compile(keras.optimizers.Adam(3e-3), listnet, steps_per_execution=SPE)
            distiller.fit(xs, ys, batch_size=32, epochs=epochs, verbose=0)
            add(rows, f"student MLP 8, {name} (w=0.3)", "test NDCG@10", ndcg(distiller.student))
        print(f"  ranking seed {seed} done", flush=True)
    print(f"\nRanking: {n_train} training queries x 20 candidates x 16 features (generator in "
          "ranking_data); the student trains on 5 % of the queries; 1000 test queries; "
          f"params teacher {scorer([128, 128], 't').count_params():,}, "
          f"student {scorer([8], 's').count_params():,}.")
    print(table("Listwise ranking NDCG@10", rows, ["test NDCG@10"]))


# -- 4. pipeline ---------------------------------------------------------------------------------------
def tflite_accuracy(content, x, y):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    index = it.get_input_details()[0]["index"]
    it.resize_tensor_input(index, x.shape)
    it.allocate_tensors()
    it.set_tensor(index, x.astype("float32"))
    it.invoke()
    return float(np.mean(it.get_tensor(it.get_output_details()[0]["index"]).argmax(-1) == y))


def tflite_int8_weight_sparsity(content):
    """Fraction of zeros among the int8 weight tensors (kernels) of a TFLite model."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    it.allocate_tensors()
    produced = {int(i) for op in it._get_ops_details() for i in op["outputs"]}
    zeros = total = 0
    for detail in it.get_tensor_details():
        if detail["dtype"] == np.int8 and len(detail["shape"]) > 1 and \
                detail["index"] not in produced and detail["index"] not in {
                    d["index"] for d in it.get_input_details()}:
            value = it.get_tensor(detail["index"])
            zeros += int(np.sum(value == 0))
            total += value.size
    return zeros / max(total, 1)


def bench_pipeline(seeds, quick, teachers):
    rows = {}
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        (x, y), _, (xt, yt) = examples.digits(seed)
        teacher = teachers.get(seed) or train_digits_teacher(x, y, 3 if quick else 12)
        name = "teacher digits_cnn(width=36), float"
        add(rows, name, "test accuracy", accuracy(teacher, xt, yt))
        add(rows, name, "non-zero weights", teacher.count_params())
        add(rows, name, "weight sparsity", 0.0)
        student, distiller = tfc.recipe.distill_and_prune(
            teacher, examples.digits_cnn(width=16), x, y, CE, sparsity=0.8, quantize=True,
            temperature=T, student_loss_weight=STUDENT_WEIGHT, epochs=3 if quick else 12,
            batch_size=64, optimizer=keras.optimizers.Adam(3e-3))
        name = "student digits_cnn(width=16): distil + prune 80 % + QAT, one fit (Keras)"
        add(rows, name, "test accuracy", accuracy(student, xt, yt))
        add(rows, name, "weight sparsity",
            tfc.pruning.sparsity_logs(distiller.student)["global_sparsity"])
        content = tfc.export.to_tflite(student, mode="int8")  # QAT: no calibration data
        name = "same student → int8 TFLite (LiteRT)"
        add(rows, name, "test accuracy", tflite_accuracy(content, xt, yt))
        add(rows, name, "weight sparsity", tflite_int8_weight_sparsity(content))
        add(rows, name, "TFLite bytes", len(content))
        print(f"  pipeline seed {seed} done", flush=True)
    print(table("Pipeline: teacher → distil + prune 80 % + QAT (one fit) → int8 TFLite", rows,
                ["test accuracy", "weight sparsity", "non-zero weights", "TFLite bytes"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny epochs: a smoke run")
    parser.add_argument("--only", default="digits,clicks,ranking,pipeline")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    start = time.time()
    teachers = {}  # digits teachers, shared by the pipeline section
    sections = {"digits": lambda s, q: bench_digits(s, q, teachers), "clicks": bench_clicks,
                "ranking": bench_ranking, "pipeline": lambda s, q: bench_pipeline(s, q, teachers)}
    for name in args.only.split(","):
        t0 = time.time()
        sections[name](seeds, args.quick)
        print(f"\n({name}: {time.time() - t0:.0f} s)", flush=True)
    print(f"\ntotal {time.time() - start:.0f} s wall, {time.process_time():.0f} s CPU "
          f"({os.cpu_count()} cores, shared with other jobs: wall depends on load)")


if __name__ == "__main__":
    main()
