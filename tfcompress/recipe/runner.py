"""`run`: every stage of a recipe in order, then the artifacts and the report."""

import os

from tfcompress.core import steps

from tfcompress.recipe.schema import SCHEMA, load
from tfcompress.recipe.stages import make_distiller, prune_stage, quantize_stage, load_teacher, compile_kwargs


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

    Stages, each only if its section is present:
    1. distil and/or prune: one `fit` of `prune.epochs` epochs (or
       `distill.epochs` when distilling without pruning). With both, the
       teacher is distilled into the pruned student in the same fit.
    2. quantize: quantization-aware training for `quantize.epochs` epochs on
       the labels, keeping pruned zeros when `preserve_sparsity`.
    3. export: `model.keras` (pruning wrappers stripped; quantization-aware
       layers kept when QAT ran) and `model_<mode>.tflite` for each
       `export.tflite` mode (int8/int16x8 calibrated on `x` unless QAT ran),
       `saved_model/` if `export.saved_model`. When QAT ran, `int8` comes
       from the QAT model and the float exports (float, dynamic, float16,
       int16x8, SavedModel) from the pruned model before QAT, which is also
       saved as `model_float.keras`.
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
    from tfcompress import export, pruning, report

    r = load(recipe)
    data = _split(data)
    x, y = data["x"], data["y"]
    t = r["train"]
    names = ["model.keras", "model_float.keras", "report.md", "logs"] + [
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

    current = model
    if "prune" in r or "distill" in r:
        epochs = r["prune"]["epochs"] if "prune" in r else r["distill"]["epochs"]
        callbacks = []
        if "prune" in r:
            current, callbacks = prune_stage(current, r, steps=steps_per_epoch * epochs)
        trainee = current
        if "distill" in r:
            trainee = make_distiller(load_teacher(r["distill"], safe_mode), current, r)
        trainee.compile(**compile_kwargs(r))
        trainee.fit(x, y, epochs=epochs, callbacks=callbacks + [_summaries(out_dir, "train")], **fit)
    float_model = pruning.strip_pruning(current) if current is not model else model
    if "quantize" in r:
        current, callbacks = quantize_stage(current, r)
        current.compile(**compile_kwargs(r, r["quantize"]["learning_rate"]))
        current.fit(x, y, epochs=r["quantize"]["epochs"],
                    callbacks=callbacks + [_summaries(out_dir, "qat")], **fit)
    final = pruning.strip_pruning(current) if "quantize" in r else float_model

    artifacts = {}
    keras_path = os.path.join(out_dir, "model.keras")
    _replace(keras_path)
    final.save(keras_path)
    artifacts["model.keras"] = keras_path
    if "quantize" in r:  # the float exports come from the model before QAT
        path = os.path.join(out_dir, "model_float.keras")
        _replace(path)
        float_model.save(path)
        artifacts["model_float.keras"] = path
    e = r.get("export", SCHEMA["export"])
    for mode in e["tflite"]:
        path = os.path.join(out_dir, f"model_{mode}.tflite")
        calibration = x if mode in ("int8", "int16x8") else None
        if mode == "int8" and "quantize" in r:
            calibration = None  # the QAT ranges are the calibration
        source = final if mode == "int8" else float_model
        export.to_tflite(source, path, mode=mode, representative_data=calibration,
                         sparse=e["sparse"], overwrite=True)
        artifacts[os.path.basename(path)] = path
    if e["saved_model"]:
        path = os.path.join(out_dir, "saved_model")
        export.to_saved_model(float_model, path, overwrite=True)
        artifacts["saved_model"] = path

    for split in ("test", "val", ""):
        key = f"x_{split}" if split else "x"
        if key in data:
            scored = (data[key], data[f"y_{split}" if split else "y"])
            break
    rep = r["report"]
    rows = {f"input ({getattr(model, 'name', 'model')})": model, **artifacts}
    table = report.compare(rows, scored, metric=rep["metric"], max_samples=rep["max_samples"],
                           latency_runs=rep["latency_runs"])
    stages = [s for s in ("distill", "prune", "quantize") if s in r] + ["export"]
    text = (f"# tfcompress recipe report\n\nstages: {' → '.join(stages)}; scored on "
            f"{len(scored[1])} samples ({'x_' + split if split else 'x'}).\n\n"
            + report.to_markdown(table) + "\n")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return table


def _summaries(out_dir, stage):
    from tfcompress.summaries import CompressionSummaries

    return CompressionSummaries(os.path.join(out_dir, "logs", stage))


def _replace(path):
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil

        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
