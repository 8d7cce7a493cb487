"""`run`: every stage of a recipe in order, then the artifacts and the report."""

import os

from tfcompress.core import steps, strip
from tfcompress.recipe import pipeline
from tfcompress.recipe.schema import SCHEMA, load
from tfcompress.recipe.stages import compile_kwargs, present, with_teacher


def _split(data):
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError("data must be (x, y) or a dict with x, y and optionally "
                             "x_val, y_val, x_test, y_test.")
        return {"x": data[0], "y": data[1]}
    if not isinstance(data, dict) or "x" not in data or data.get("y") is None:
        raise ValueError("data must be (x, y) or a dict with arrays 'x' and 'y' (and "
                         "optionally 'x_val', 'y_val', 'x_test', 'y_test').")
    for split in ("val", "test"):
        if (f"x_{split}" in data) != (f"y_{split}" in data):
            raise ValueError(f"data has only one of 'x_{split}' and 'y_{split}'; give both.")
    return data


def run(model, recipe, data, out_dir, *, safe_mode=True, overwrite=False):
    """Runs a whole recipe on `model` and writes every artifact and the report into `out_dir`.

    Stages, each only if its section is present (the techniques register
    them: `tfcompress.core.techniques.stages()`), each fit run by
    `pipeline.fit_stage`:
    1. distil and/or prune (and any other training-time transform): one
       `fit` of `prune.epochs` epochs (or `distill.epochs` when distilling
       without pruning). With both, the teacher is distilled into the pruned
       student in the same fit.
    2. quantize: quantization-aware training for `quantize.epochs` epochs on
       the labels, keeping pruned zeros when `preserve_sparsity`.
    3. export: `model.keras` (`tfcompress.strip`ped; quantization-aware
       layers kept when QAT ran) and `model_<mode>.tflite` for each
       `export.tflite` mode (int8/int16x8 calibrated on `x` unless QAT ran),
       `saved_model/` if `export.saved_model`. When QAT ran, `int8` comes
       from the QAT model and the float exports (float, dynamic, float16,
       int16x8, SavedModel) from the pruned model before QAT, which is also
       saved as `model_float.keras`.
    An `auto` section replaces all three: `tfcompress.auto.compress` with its
    budget, on `x, y` (choosing on `x_val, y_val`), the `train` section's
    loss, learning rate and batch size; it writes `model.keras` (the
    quantization-aware model), `model_int8.tflite` and `auto.md` (every
    configuration tried).
    Each training stage logs to TensorBoard under `out_dir/logs/train` and
    `out_dir/logs/qat` (`tfcompress.CompressionSummaries`: sparsity, QAT
    ranges, distillation losses). Finally `report.md`: `tfcompress.report.compare` over the input model and
    every artifact, on `x_test, y_test` (else `x_val, y_val`, else `x, y`).

    Args:
        model: a Sequential or functional Keras 3 model (not changed).
        recipe: a recipe dict or file path (see `load`).
        data: `(x, y)` or a dict with `x`, `y` and optionally `x_val`, `y_val`
            (validation during fit) and `x_test`, `y_test` (the report).
        out_dir: created if needed; existing artifacts are replaced only with
            `overwrite=True`.
        safe_mode: load a teacher file in Keras safe mode.

    Returns:
        The report as a pandas DataFrame (also written as `out_dir/report.md`).

    Example:

    ```python
    from tfcompress import examples, recipe
    (x, y), _, (xt, yt) = examples.digits()
    table = recipe.run(examples.digits_cnn(width=8),
                       {"prune": {"final_sparsity": 0.5}, "quantize": {},
                        "export": {"tflite": ["int8"]}},
                       {"x": x, "y": y, "x_test": xt, "y_test": yt},
                       "/tmp/recipe_out", overwrite=True)
    ```
    """
    from tfcompress import export

    r = load(recipe)
    data = _split(data)
    x, y = data["x"], data["y"]
    t = r["train"]
    names = ["model.keras", "model_float.keras", "report.md", "logs", "auto.md"] + [
        f"model_{m}.tflite" for m in r.get("export", {}).get("tflite", [])]
    if r.get("export", {}).get("saved_model"):
        names.append("saved_model")
    os.makedirs(out_dir, exist_ok=True)
    if not overwrite:
        taken = [n for n in names if os.path.lexists(os.path.join(out_dir, n))]
        if taken:
            raise FileExistsError(f"'{out_dir}' already holds {', '.join(taken)}; pass "
                                  "overwrite=True (--overwrite) to replace them.")
    _replace(os.path.join(out_dir, "logs"))
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None
    fit = dict(batch_size=t["batch_size"], validation_data=validation, verbose=t["verbose"])
    steps_per_epoch = steps.steps_per_epoch(x, t["batch_size"])

    if "auto" in r:
        artifacts = _auto(model, r, data, out_dir)
        return _report(model, r, data, artifacts, ["auto"], out_dir)
    r = with_teacher(r, safe_mode)
    transforms, teachers, finals = (present(r, role) for role in ("transform", "teacher", "final"))
    current = model
    if transforms or teachers:
        epochs = max(r[st.key]["epochs"] for st in transforms or teachers)
        teacher = None
        if teachers:
            teacher = _bound(teachers[0], r, steps_per_epoch * epochs)
        current, _ = pipeline.fit_stage(
            current, [_bound(st, r, steps_per_epoch * epochs) for st in transforms], x, y,
            compile_kwargs=compile_kwargs(r), epochs=epochs, teacher=teacher,
            log_dir=os.path.join(out_dir, "logs", "train"), **fit)
    float_model = strip(current) if current is not model else model
    finishes = [st.finish for st in transforms if st.finish is not None]
    for finish in finishes:
        float_model = finish(float_model)
    if finishes:  # later stages train the finished (e.g. shrunk) model
        current = float_model
    for st in finals:
        section = r[st.key]
        current, _ = pipeline.fit_stage(
            current, [_bound(st, r, steps_per_epoch * section["epochs"])], x, y,
            compile_kwargs=compile_kwargs(r, section.get("learning_rate")),
            epochs=section["epochs"],
            log_dir=os.path.join(out_dir, "logs", st.log_name or st.key), **fit)
    final = strip(current) if finals else float_model

    artifacts = {}
    keras_path = os.path.join(out_dir, "model.keras")
    _replace(keras_path)
    final.save(keras_path)
    artifacts["model.keras"] = keras_path
    if finals:  # the float exports come from the model before QAT
        path = os.path.join(out_dir, "model_float.keras")
        _replace(path)
        float_model.save(path)
        artifacts["model_float.keras"] = path
    e = r.get("export", SCHEMA["export"])
    for mode in e["tflite"]:
        path = os.path.join(out_dir, f"model_{mode}.tflite")
        calibration = x if mode in ("int8", "int16x8") else None
        if mode == "int8" and finals:
            calibration = None  # the QAT ranges are the calibration
        source = final if mode == "int8" else float_model
        export.to_tflite(source, path, mode=mode, representative_data=calibration,
                         sparse=e["sparse"], overwrite=True)
        artifacts[os.path.basename(path)] = path
    if e["saved_model"]:
        path = os.path.join(out_dir, "saved_model")
        export.to_saved_model(float_model, path, overwrite=True)
        artifacts["saved_model"] = path

    stages = [st.key for st in teachers + transforms + finals] + ["export"]
    return _report(model, r, data, artifacts, stages, out_dir)


def _auto(model, r, data, out_dir):
    """The `auto` section: `tfcompress.auto.compress`, its model, file and table written."""
    from tfcompress import auto

    a, t = r["auto"], r["train"]
    budget = {key: a[name] for key, name in (("tflite_bytes", "max_bytes"),
                                             ("gzip_bytes", "max_gzip_bytes"),
                                             ("latency_ms", "max_latency_ms"),
                                             ("params", "max_params")) if a[name] is not None}
    split = {k: data[k] for k in ("x", "y", "x_val", "y_val") if k in data}
    result = auto.compress(model, split, budget, metric=a["metric"], max_drop=a["max_drop"],
                           loss=compile_kwargs(r)["loss"], epochs=a["epochs"],
                           qat_epochs=a["qat_epochs"], batch_size=t["batch_size"],
                           learning_rate=t["learning_rate"], tries=a["tries"],
                           distill=a["distill"], verbose=t["verbose"])
    paths = {name: os.path.join(out_dir, name)
             for name in ("model.keras", "model_int8.tflite", "auto.md")}
    for path in paths.values():
        _replace(path)
    result.model.save(paths["model.keras"])
    with open(paths["model_int8.tflite"], "wb") as handle:
        handle.write(result.tflite)
    with open(paths["auto.md"], "w", encoding="utf-8") as handle:
        handle.write(f"# tfcompress auto: budget {budget}\n\n"
                     f"{result.report.to_markdown(index=False)}\n")
    return {"model.keras": paths["model.keras"], "model_int8.tflite": paths["model_int8.tflite"]}


def _report(model, r, data, artifacts, stages, out_dir):
    """`report.md`: the input model and every artifact on the test data (else val, else x)."""
    from tfcompress import report

    for split in ("test", "val", ""):
        key = f"x_{split}" if split else "x"
        if key in data:
            scored = (data[key], data[f"y_{split}" if split else "y"])
            break
    rep = r["report"]
    rows = {f"input ({getattr(model, 'name', 'model')})": model, **artifacts}
    table = report.compare(rows, scored, metric=rep["metric"], max_samples=rep["max_samples"],
                           latency_runs=rep["latency_runs"])
    text = (f"# tfcompress recipe report\n\nstages: {' → '.join(stages)}; scored on "
            f"{len(scored[1])} samples ({'x_' + split if split else 'x'}).\n\n"
            + report.to_markdown(table) + "\n")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return table


def _bound(stage, r, steps_in_stage):
    return lambda model: stage.prepare(model, r, steps_in_stage)


def _replace(path):
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil

        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
