"""Recipes: validation, prepare() for one stage, run() end to end, JSON files, `tfcompress run`."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import pruning, recipe


def _table_has_row(text, name):
    """Whether a markdown table in `text` has a row named `name` (cells are padded)."""
    return any(line.startswith("|") and line.split("|")[1].strip() == name
               for line in text.splitlines())


def _dense():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(3)])


@pytest.mark.parametrize("bad, names", [
    ({"prunning": {}}, ["prunning", "prune", "quantize", "export"]),
    ({"prune": {"final_sparsity": 0.8, "sparsity": 0.5}}, ["prune.sparsity", "final_sparsity",
                                                           "block_size"]),
    ({"prune": {"final_sparsity": 1.0}}, ["prune.final_sparsity", "[0, 1)"]),
    ({"prune": {}}, ["prune.final_sparsity", "required"]),
    ({"prune": {"final_sparsity": 0.5, "m_by_n": [4, 2]}}, ["prune.m_by_n"]),
    ({"export": {"tflite": ["int4"]}}, ["export.tflite", "int4", "float16", "int16x8"]),
    ({"train": {"optimizer": "adamax2"}}, ["train.optimizer", "sgd"]),
    ({"train": {"loss": "no_such_loss"}}, ["train.loss"]),
    ({"quantize": {"preserve_sparsity": "yes"}}, ["quantize.preserve_sparsity", "true"]),
    ({"prune": {"final_sparsity": 0.5, "skip_layers": "click"}}, ["prune.skip_layers",
                                                                  "layer names"]),
    ({"distill": {"temperature": 2.0}}, ["distill.teacher", "required"]),
    ({"distill": {"teacher": "t.keras", "loss": "kl"}}, ["distill.loss", "logits", "binary",
                                                         "listwise", "pairwise"]),
    ({"distill": {"teacher": "t.keras", "loss": "pairwise", "temperature": 2.0}},
     ["distill.temperature", "pairwise"]),
    ({"distill": {"teacher": "t.keras", "student_loss_weight": 2}},
     ["distill.student_loss_weight", "[0, 1]"]),
    ({"distill": {"teacher": "t.keras", "features": [{"teacher": "encoder_1"}]}},
     ["distill.features[0]", "missing ['student']"]),
    ({"distill": {"teacher": "t.keras", "features": [{"teacher": "a", "student": "b",
                                                      "los": "mse"}]}},
     ["distill.features[0]", "unknown keys ['los']"]),
    ({"distill": {"teacher": "t.keras", "features": [{"teacher": "a", "student": "b",
                                                      "loss": "kl"}]}},
     ["distill.features[0].loss", "cosine_similarity"]),
    ({"auto": {"metric": "auc"}}, ["'auto' section needs a budget", "auto.max_bytes"]),
    ({"auto": {"max_bytes": -5}}, ["auto.max_bytes"]),
    ({"auto": {"max_bytes": 9000}, "prune": {"final_sparsity": 0.5}},
     ["'auto' section chooses the techniques", "['prune']"]),
    ({"auto": {"max_bytes": 9000}, "export": {"tflite": ["int8"]}}, ["['export']"]),
])
def test_invalid_recipes_name_the_key_and_the_allowed_values(bad, names):
    with pytest.raises(ValueError) as error:
        recipe.validate(bad)
    for name in names:
        assert name in str(error.value)


def test_json_round_trip_and_yaml_message(tmp_path):
    written = {"prune": {"final_sparsity": 0.6, "end_step": 40, "block_size": [1, 1]},
               "quantize": {"epochs": 1}, "export": {"tflite": ["int8"], "saved_model": True}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(written))
    loaded = recipe.load(str(path))
    assert loaded == recipe.validate(written)
    assert loaded["prune"]["final_sparsity"] == 0.6 and loaded["train"]["batch_size"] == 32
    again = tmp_path / "again.json"
    again.write_text(json.dumps(loaded))
    assert recipe.load(str(again)) == loaded  # defaults filled in are valid input too
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        recipe.load(str(tmp_path / "bad.json"))
    (tmp_path / "r.yaml").write_text("prune:\n  final_sparsity: 0.5\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pyyaml"):
            recipe.load(str(tmp_path / "r.yaml"))
    else:
        assert recipe.load(str(tmp_path / "r.yaml"))["prune"]["final_sparsity"] == 0.5


def test_schedule_choice_and_end_step_needed_by_prepare():
    constant = recipe.pruning_schedule({"prune": {"final_sparsity": 0.5,
                                                  "initial_sparsity": 0.5}})
    assert isinstance(constant, pruning.ConstantSparsity)
    decay = recipe.pruning_schedule({"prune": {"final_sparsity": 0.5, "end_step": 100}})
    assert isinstance(decay, pruning.PolynomialDecay) and decay.frequency == 10
    with pytest.raises(ValueError, match="prune.end_step"):
        recipe.prepare(_dense(), {"prune": {"final_sparsity": 0.5}})


@pytest.mark.parametrize("name, from_logits", [
    ("sparse_categorical_crossentropy", True), ("binary_crossentropy", False),
    ("categorical_crossentropy", True)])
def test_compile_kwargs_loss_takes_from_logits(name, from_logits):
    kwargs = recipe.compile_kwargs({"train": {"loss": name, "from_logits": from_logits,
                                              "learning_rate": 0.01}})
    assert kwargs["loss"].get_config()["from_logits"] is from_logits
    assert np.isclose(float(kwargs["optimizer"].learning_rate), 0.01)


def test_prepare_returns_a_pruning_model_and_callbacks_that_prune(rng):
    r = {"prune": {"final_sparsity": 0.5, "end_step": 10, "frequency": 2},
         "train": {"learning_rate": 1e-2}}
    base = _dense()
    model, callbacks = recipe.prepare(base, r)
    assert any(isinstance(l, pruning.PruneLowMagnitude) for l in model.layers)
    assert any(isinstance(c, pruning.UpdatePruningStep) for c in callbacks)
    model.compile(**recipe.compile_kwargs(r))
    x = rng.normal(size=(96, 8)).astype("float32")
    model.fit(x, rng.integers(0, 3, 96), batch_size=8, epochs=2, callbacks=callbacks,
              verbose=0)
    kernel = np.asarray(pruning.strip_pruning(model).layers[0].kernel)
    assert abs(float(np.mean(kernel == 0)) - 0.5) < 0.02
    assert np.mean(np.asarray(base.layers[0].kernel) == 0) == 0  # the input is not changed
    qat, qat_callbacks = recipe.prepare(model, {"quantize": {}})
    assert any("Quantize" in type(l).__name__ for l in qat.layers)
    # one step callback drives every technique's wrappers (pruning's included)
    assert any(isinstance(c, tfc.core.steps.StepCallback) for c in qat_callbacks)
    qat.compile(**recipe.compile_kwargs(r))
    qat.fit(x, rng.integers(0, 3, 96), batch_size=8, callbacks=qat_callbacks, verbose=0)


def test_run_prune_quantize_export_writes_every_artifact(tmp_path, digits):
    from tfcompress import examples

    (x, y), (xv, yv), (xt, yt) = digits
    r = {"prune": {"final_sparsity": 0.5, "epochs": 2},
         "quantize": {"epochs": 1, "learning_rate": 3e-4},
         "export": {"tflite": ["int8", "float"], "saved_model": True},
         "train": {"learning_rate": 3e-3}, "report": {"latency_runs": 2}}
    data = {"x": x[:192], "y": y[:192], "x_val": xv[:32], "y_val": yv[:32],
            "x_test": xt[:64], "y_test": yt[:64]}
    table = recipe.run(examples.digits_cnn(width=4), r, data, str(tmp_path))
    for name in ("model.keras", "model_float.keras", "model_int8.tflite",
                 "model_float.tflite", "report.md"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    assert list(table.index)[1:] == ["model.keras", "model_float.keras", "model_int8.tflite",
                                    "model_float.tflite", "saved_model"]
    assert 0.4 < table.loc["model_float.tflite", "sparsity"] < 0.55
    report = (tmp_path / "report.md").read_text()
    assert "prune → quantize → export" in report and _table_has_row(report, "model_int8.tflite")
    with pytest.raises(FileExistsError, match="overwrite"):
        recipe.run(examples.digits_cnn(width=4), r, data, str(tmp_path))


def test_run_auto_section_meets_its_budget_and_reports(tmp_path, digits, cnn):
    (x, y), (xv, yv), (xt, yt) = digits
    budget = len(tfc.export.to_tflite(cnn)) // 6
    r = {"auto": {"max_bytes": budget, "epochs": 1, "qat_epochs": 1},
         "train": {"learning_rate": 1e-3}, "report": {"latency_runs": 2}}
    data = {"x": x, "y": y, "x_val": xv, "y_val": yv, "x_test": xt, "y_test": yt}
    table = recipe.run(cnn, r, data, str(tmp_path))
    assert len((tmp_path / "model_int8.tflite").read_bytes()) <= budget
    assert list(table.index)[1:] == ["model.keras", "model_int8.tflite"]
    assert table.loc["model_int8.tflite", "accuracy"] > 0.85
    assert "within budget" in (tmp_path / "auto.md").read_text()
    assert "stages: auto; scored on" in (tmp_path / "report.md").read_text()


def test_cli_run(tmp_path, rng):
    model = _dense()
    model.save(tmp_path / "m.keras")
    x = rng.normal(size=(128, 8)).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype("int32"))
    (tmp_path / "r.json").write_text(json.dumps(
        {"prune": {"final_sparsity": 0.5, "epochs": 2}, "export": {"tflite": ["float"]},
         "report": {"latency_runs": 2}}))
    (tmp_path / "bad.json").write_text(json.dumps({"export": {"tflite": ["int4"]}}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    script = (
        "import sys\nfrom tfcompress import cli\n"
        "args = sys.argv[1:]\n"
        "bad = list(args); bad[1] = bad[1].replace('r.json', 'bad.json')\n"
        "print('BAD', cli.main(bad))\n"
        "print('OK', cli.main(args))\n")
    out = subprocess.run(
        [sys.executable, "-c", script, "run", str(tmp_path / "r.json"), "--model",
         str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120)
    assert "OK 0" in out.stdout, out.stderr[-2000:]
    assert "BAD 1" in out.stdout
    error = [l for l in out.stderr.splitlines() if l.startswith("tfcompress run: error:")]
    assert len(error) == 1 and "export.tflite" in error[0] and "Traceback" not in out.stderr
    assert _table_has_row(out.stdout, "model_float.tflite")
    for name in ("model.keras", "model_float.tflite", "report.md"):
        assert (tmp_path / "out" / name).is_file()


def test_run_distils_into_the_pruned_student_from_a_recipe_file(tmp_path, digits, cnn):
    """The teacher path is relative to the recipe file; distillation and pruning share one fit."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tfcompress import examples

    (x, y), _, (xt, yt) = digits
    (tmp_path / "recipes").mkdir()
    cnn.save(tmp_path / "recipes" / "teacher.keras")
    (tmp_path / "recipes" / "r.json").write_text(json.dumps({
        "distill": {"teacher": "teacher.keras", "temperature": 4.0, "student_loss_weight": 0.3},
        "prune": {"final_sparsity": 0.6, "epochs": 2},
        "train": {"learning_rate": 3e-3}, "report": {"latency_runs": 2}}))
    keras.utils.set_random_seed(0)
    table = recipe.run(examples.digits_cnn(width=8), str(tmp_path / "recipes" / "r.json"),
                       {"x": x, "y": y, "x_test": xt, "y_test": yt}, str(tmp_path / "out"))
    assert 0.55 < table.loc["model.keras", "sparsity"] < 0.65
    assert table.loc["model.keras", "accuracy"] > 0.8
    assert "distill → prune → export" in (tmp_path / "out" / "report.md").read_text()
    acc = EventAccumulator(str(tmp_path / "out" / "logs" / "train" / "train"))
    acc.Reload()
    tags = acc.Tags()["tensors"]
    for component in ("epoch_student_loss", "epoch_distillation_loss", "epoch_total_loss"):
        assert component in tags, tags
    distillation = [float(np.asarray(__import__("tensorflow").make_ndarray(e.tensor_proto)))
                    for e in acc.Tensors("epoch_distillation_loss")]
    assert len(distillation) == 2 and distillation[-1] > 0
    assert (tmp_path / "out" / "logs" / "train" / "pruning").is_dir()


def test_prepare_distils_a_click_model_with_binary_distillation(click):
    from tfcompress import distillation, examples

    teacher, features, clicks = click
    r = {"distill": {"teacher": teacher, "loss": "binary", "student_loss_weight": 0.2},
         "train": {"loss": "binary_crossentropy", "from_logits": False, "metrics": ["auc"],
                   "learning_rate": 1e-2}}
    distiller, callbacks = recipe.prepare(examples.click_model(dim=4), r)
    assert callbacks == []
    assert isinstance(distiller, distillation.Distiller) and distiller.teacher is teacher
    (loss,) = distiller.distillation_losses
    assert isinstance(loss, distillation.BinaryDistillation)
    assert loss.get_config()["from_logits"] is False and loss.get_config()["temperature"] == 1.0
    distiller.compile(**recipe.compile_kwargs(r))
    history = distiller.fit(features, clicks, batch_size=256, epochs=1, verbose=0)
    assert history.history["distillation_loss"][-1] > 0
    with pytest.raises(FileNotFoundError, match="distill.teacher"):
        recipe.prepare(examples.click_model(), {"distill": {"teacher": "missing.keras"}})


def test_prepare_adds_a_hidden_state_loss_per_features_entry():
    from tfcompress import distillation

    def mlp(width, name):
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(width, name="hidden"),
                                 keras.layers.Dense(3)], name=name)

    teacher = mlp(32, "teacher")
    r = {"distill": {"teacher": teacher, "features": [
        {"teacher": "hidden", "student": "hidden", "weight": 0.5}]}}
    distiller, _ = recipe.prepare(mlp(8, "student"), r)
    logits, hint = distiller.distillation_losses
    assert isinstance(logits, distillation.LogitsDistillation)
    assert isinstance(hint, distillation.FeatureDistillation)
    assert (hint.teacher_layer_name, hint.student_layer_name) == ("hidden", "hidden")
    assert distiller.distillation_loss_weights == [1.0, 0.5]
    distiller.compile(**recipe.compile_kwargs(recipe.validate(r)))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    history = distiller.fit(x, np.arange(64) % 3, batch_size=32, epochs=1, verbose=0)
    assert history.history["distillation_loss_feature_hidden"][-1] > 0


def test_run_on_dict_inputs_spreads_the_schedule_over_every_step(tmp_path, click):
    """Steps per epoch count samples, not the dict's keys: sparsity grows over the fit."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tfcompress import examples

    _, features, clicks = click
    r = {"prune": {"final_sparsity": 0.5, "epochs": 3},
         "train": {"loss": "binary_crossentropy", "from_logits": False, "metrics": ["auc"],
                   "batch_size": 500},  # 12 steps an epoch; the schedule ends at step 25
         "report": {"metric": "auc", "latency_runs": 2}}
    table = recipe.run(examples.click_model(), r, {"x": features, "y": clicks}, str(tmp_path))
    assert 0.45 < table.loc["model.keras", "sparsity"] <= 0.5
    acc = EventAccumulator(str(tmp_path / "logs" / "train" / "pruning"))
    acc.Reload()
    curve = {e.step: float(np.asarray(__import__("tensorflow").make_ndarray(e.tensor_proto)))
             for e in acc.Tensors("pruning/global_sparsity")}
    assert sorted(curve) == [0, 12, 24, 36]
    assert 0.1 < curve[12] < 0.45 and abs(curve[36] - 0.5) < 0.01, curve  # 0.43 at step 12


def test_skip_layers_stay_dense_and_unknown_names_are_errors():
    from tfcompress import examples

    r = {"prune": {"final_sparsity": 0.5, "end_step": 10, "skip_layers": ["interaction"]}}
    model, _ = recipe.prepare(examples.click_model(), r)
    wrapped = {l.layer.name for l in model.layers if isinstance(l, pruning.PruneLowMagnitude)}
    assert {"user_embedding", "item_embedding", "context_embedding"} <= wrapped
    assert "interaction" not in wrapped and "interaction" in [l.name for l in model.layers]
    r["prune"]["skip_layers"] = ["interactoin"]
    with pytest.raises(ValueError, match=r"prune.skip_layers.*interactoin.*user_embedding"):
        recipe.prepare(examples.click_model(), r)


def test_run_embeddings_section_then_prune_and_quantize_the_tower(tmp_path, click):
    """`embeddings` (QR tables stored int8) beside a pruned, then quantization-aware tower."""
    from ai_edge_litert.interpreter import Interpreter
    from tfcompress import examples

    _, features, clicks = click
    r = {"embeddings": {"method": "qr", "min_rows": 100, "bits": 8},
         "prune": {"final_sparsity": 0.5, "epochs": 4, "skip_layers": ["click"]},
         "quantize": {"epochs": 1}, "export": {"tflite": ["int8"]},
         "train": {"loss": "binary_crossentropy", "from_logits": False, "metrics": ["auc"],
                   "batch_size": 128, "learning_rate": 1e-2},
         "report": {"metric": "auc", "latency_runs": 2}}
    table = recipe.run(examples.click_model(), r, {"x": features, "y": clicks}, str(tmp_path))
    plain = keras.saving.load_model(tmp_path / "model_float.keras")
    user = plain.get_layer("user_embedding")
    assert isinstance(user, tfc.embeddings.QREmbedding) and user.bits == 8
    # user 200 rows: 14 quotient + 15 remainder rows of 16 int8 and a scale byte each; item
    # 100: 10 + 10; the 8-row context table is left float (min_rows)
    expected = (14 + 15 + 10 + 10) * 17 + 8 * 4 * 4
    assert table.loc["model_float.keras", "table bytes"] == expected
    content = (tmp_path / "model_int8.tflite").read_bytes()
    int8 = {tuple(d["shape"]) for d in Interpreter(model_content=content).get_tensor_details()
            if d["dtype"] == np.int8}
    assert {(14, 16), (15, 16), (10, 16)} <= int8
    assert table.loc["model_int8.tflite", "auc"] > 0.6


def test_cli_run_compresses_a_keras_rs_dlrm_s_tables_from_per_input_arrays(tmp_path):
    """`tfcompress run` on a saved keras-rs DLRM: x.<input> arrays, an embeddings section."""
    from tfcompress import examples

    model = examples.recommender("dlrm", users=500, items=100, dim=8)
    model.save(tmp_path / "dlrm.keras")
    x, y = examples.zipf_click_logs(4096, users=500, items=100, seed=1)
    xt, yt = examples.zipf_click_logs(1024, users=500, items=100, seed=2)
    np.savez(tmp_path / "d.npz", y=y, y_test=yt, **{f"x.{k}": v for k, v in x.items()},
             **{f"x_test.{k}": v for k, v in xt.items()})
    np.savez(tmp_path / "both.npz", x=x["user"], y=y, **{"x.user": x["user"]})
    (tmp_path / "r.json").write_text(json.dumps({
        "embeddings": {"method": "rowwise_int4", "min_rows": 100, "epochs": 3},
        "export": {"tflite": ["float"]},
        "train": {"loss": "binary_crossentropy", "from_logits": False, "batch_size": 256,
                  "learning_rate": 1e-2},
        "report": {"metric": "auc", "latency_runs": 2}}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def cli(data):
        return subprocess.run(
            [sys.executable, "-m", "tfcompress_cli", "run", str(tmp_path / "r.json"),
             "--model", str(tmp_path / "dlrm.keras"), "--data", str(tmp_path / data),
             "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env,
            timeout=300)

    bad = cli("both.npz")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    (line,) = [l for l in bad.stderr.splitlines() if l.startswith("tfcompress run: error:")]
    assert "x.<input name>" in line, line

    out = cli("d.npz")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _table_has_row(out.stdout, "model_float.tflite")
    flat = (tmp_path / "out" / "model_float.tflite").read_bytes()
    # user 500 and item 100 rows stored int4 (two per byte) with a scale code a row; the
    # 24-row hour table (below min_rows) stays float32
    assert tfc.export.census.table_bytes(flat) == (500 + 100) * (4 + 1) + 24 * 8 * 4
    plain = tfc.strip(keras.saving.load_model(tmp_path / "out" / "model.keras"))
    assert isinstance(plain.get_layer("user_table"), tfc.embeddings.Int8RowsEmbedding)
    assert _table_has_row(out.stdout, "model.keras") and " 3,768 |" in out.stdout
    auc = {name: float(line.rstrip(" |").split("|")[-1]) for line in out.stdout.splitlines()
           for name in ("input (dlrm_recommender)", "model.keras", "model_float.tflite")
           if line.startswith(f"| {name} ")}
    assert abs(auc["model_float.tflite"] - auc["model.keras"]) <= 1e-3, out.stdout  # LiteRT
    assert auc["model_float.tflite"] > auc["input (dlrm_recommender)"] + 0.05, out.stdout
