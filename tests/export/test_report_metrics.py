"""`report.compare` and `verify` choose a metric that fits the model, on any model."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import report
from tfcompress.export import metrics


def _regression(rng):
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 3))).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    return model, x, y


def test_regression_model_gets_its_compiled_loss_or_metric(rng, tmp_path):
    model, x, y = _regression(rng)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=2, verbose=0)
    table = report.compare({"reg": model}, (x, y), latency_runs=3)
    (column,) = set(table.columns) - set(report.COLUMNS)
    expected = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    assert table.loc["reg", column] == pytest.approx(expected, rel=1e-5)

    model.compile("adam", "mse", metrics=["mae"])
    model.save(tmp_path / "reg.keras")
    flat = tfc.export.to_tflite(model)
    table = report.compare({"file": tmp_path / "reg.keras", "tflite": flat}, (x, y),
                           latency_runs=3)
    expected = float(np.mean(np.abs(model.predict(x, verbose=0) - y)))
    assert list(table.columns)[-1] == "mae"  # read from the .keras file's compile config
    assert table.loc["file", "mae"] == pytest.approx(expected, rel=1e-5)
    assert table.loc["tflite", "mae"] == pytest.approx(expected, rel=1e-4)

    uncompiled = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    assert list(report.compare({"u": uncompiled}, (x, y), latency_runs=3).columns)[-1] == "mse"

    report_ = tfc.export.verify(flat, model, (x, y))
    assert report_.metric == "mae" and report_.keras_accuracy is None
    assert report_.artifact_score == pytest.approx(expected, rel=1e-4)


def test_a_metric_that_cannot_apply_is_an_error(rng):
    model, x, y = _regression(rng)
    for metric in ("accuracy", "auc"):
        with pytest.raises(ValueError, match="regression output"):
            report.compare({"reg": model}, (x, y), metric=metric, latency_runs=3)


def test_classes_and_one_sigmoid_output_are_told_apart(rng):
    x = rng.normal(size=(64, 4)).astype("float32")
    classes = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    ids = rng.integers(0, 3, size=64)
    assert list(report.compare({"c": classes}, (x, ids), latency_runs=3).columns)[-1] == \
        "accuracy"
    one_hot = np.eye(3, dtype="float32")[ids]
    by_ids = report.compare({"c": classes}, (x, ids), latency_runs=3)
    by_rows = report.compare({"c": classes}, (x, one_hot), latency_runs=3)
    assert by_ids.loc["c", "accuracy"] == by_rows.loc["c", "accuracy"]

    click = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    clicks = (x[:, 0] > 0).astype("float32")
    table = report.compare({"click": click}, (x, clicks), latency_runs=3)
    assert list(table.columns)[-1] == "auc"
    click.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    assert list(report.compare({"click": click}, (x, clicks), latency_runs=3).columns)[-1] == \
        "accuracy"


def test_multi_output_and_dict_output_models(rng):
    x = rng.normal(size=(64, 5)).astype("float32")
    inputs = keras.Input((5,), name="x")
    logits = keras.layers.Dense(4, name="topic")(inputs)
    value = keras.layers.Dense(2, name="value")(inputs)
    ids, targets = rng.integers(0, 4, size=64), rng.normal(size=(64, 2)).astype("float32")

    as_dict = keras.Model(inputs, {"topic": logits, "value": value})
    labels = {"topic": ids, "value": targets}
    table = report.compare({"m": as_dict}, (x, labels), latency_runs=3)
    out = as_dict.predict(x, verbose=0)
    assert table.loc["m", "accuracy"] == pytest.approx(metrics.accuracy(out["topic"], ids))
    table = report.compare({"m": as_dict}, (x, labels), output="value", latency_runs=3)
    assert table.loc["m", "mse"] == pytest.approx(float(np.mean((out["value"] - targets) ** 2)),
                                                  rel=1e-5)
    # the int8 flatbuffer beside it is scored on the same output
    flat = tfc.export.to_tflite(as_dict, mode="int8", representative_data=x)
    table = report.compare({"m": as_dict, "int8": flat}, (x, labels), output="value",
                           latency_runs=3)
    assert abs(table.loc["int8", "mse"] - table.loc["m", "mse"]) < 0.1

    as_list = keras.Model(inputs, [logits, value])
    table = report.compare({"m": as_list}, (x, [ids, targets]), latency_runs=3)
    assert list(table.columns)[-1] == "accuracy"
    with pytest.raises(ValueError, match="list of 1 arrays"):
        report.compare({"m": as_list}, (x, [targets]), latency_runs=3)
    with pytest.raises(ValueError, match="keys"):
        report.compare({"m": as_dict}, (x, {"other": ids}), latency_runs=3)
