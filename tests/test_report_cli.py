"""`report.compare` and the `convert` / `inspect` / `report` commands, on real files.

A digits CNN is trained, pruned to 80 % and converted to int8 for real; the
`.tflite` rows run in LiteRT. The CLI runs as `python -m tfcompress.cli` in
subprocesses (several at once, to keep the wall time down); argument checks
and `--help` call `cli.main` in-process, which is what the subprocess runs.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

import tfcompress as tfc
from tfcompress import cli, examples, report

SPARSITY = 0.8


def _start(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "tfcompress.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(process, timeout=240):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _error_line(err):
    return err.strip().splitlines()[-1]


def _table(stdout):
    """{row name: {column: cell}} from the markdown table in `stdout`."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def _number(cell):
    return float(cell.replace(",", ""))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Labelled data and a Lambda-layer model on disk, and the CLI runs on them.

    Each subprocess starts as soon as its inputs exist and a test collects it
    later, so the runs overlap with training (each pays for importing
    TensorFlow).
    """
    tmp = tmp_path_factory.mktemp("cli")
    _, _, (x_test, y_test) = examples.digits()
    np.savez(tmp / "test.npz", x=x_test, y=y_test)
    lam = keras.Sequential([keras.Input((8, 8, 1), name="image"),
                            keras.layers.Lambda(lambda t: t * 2.0),
                            keras.layers.Flatten(), keras.layers.Dense(10, name="logits")])
    lam.save(tmp / "lambda.keras")
    running = {
        "lambda": _start("report", str(tmp / "lambda.keras"), "--data", str(tmp / "test.npz")),
    }
    yield tmp, running
    for process in running.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def trained(files):
    """A trained dense CNN, a copy pruned to 80 % inside fit, and the stripped pruned model.

    The dense model is saved to `model.keras` and `tfcompress convert` starts on it
    at once.
    """
    tmp, running = files
    keras.utils.set_random_seed(0)
    (x, y), _, _ = examples.digits()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dense = examples.digits_cnn(width=8)
    dense.compile(keras.optimizers.Adam(3e-3), loss)
    dense.fit(x, y, batch_size=32, epochs=4, verbose=0)
    dense.save(tmp / "model.keras")  # compiled: the file holds the optimizer state too
    running["convert"] = _start("convert", str(tmp / "model.keras"), "--to", "int8",
                                "--out", str(tmp / "model.tflite"), "--data",
                                str(tmp / "test.npz"))
    schedule = tfc.pruning.PolynomialDecay(0.0, SPARSITY, begin_step=0, end_step=40,
                                           frequency=10)
    pruning = tfc.pruning.prune_low_magnitude(dense, pruning_schedule=schedule)
    pruning.compile(keras.optimizers.Adam(1e-3), loss)
    pruning.fit(x, y, batch_size=32, epochs=2, verbose=0,
                callbacks=[tfc.pruning.UpdatePruningStep()])
    return dense, pruning, tfc.pruning.strip_pruning(pruning)


def test_compare_dense_pruned_int8_and_saved_model(trained, digits, tmp_path):
    dense, pruning, pruned = trained
    (x, _), _, (x_test, y_test) = digits
    flat = tfc.export.to_tflite(pruned, tmp_path / "int8.tflite", mode="int8",
                                representative_data=x[:100])
    tfc.export.to_saved_model(pruned, tmp_path / "saved")
    table = report.compare(
        {"dense": dense, "pruning": pruning, "pruned": pruned,
         "int8.tflite": str(tmp_path / "int8.tflite"), "saved": tmp_path / "saved"},
        (x_test, y_test), latency_runs=20)

    assert list(table.index) == ["dense", "pruning", "pruned", "int8.tflite", "saved"]
    assert list(table.columns) == list(report.COLUMNS) + ["accuracy"]

    # Parameters are the model's own weights: no masks or step counters.
    params = dense.count_params()
    assert table.loc["dense", "parameters"] == params
    assert table.loc["pruning", "parameters"] == params
    assert table.loc["saved", "parameters"] == params
    nonzero = sum(int(np.count_nonzero(w)) for w in pruned.get_weights())
    for row in ("pruning", "pruned", "saved"):
        assert table.loc[row, "non-zero parameters"] == nonzero
    # 80 % of the pruned kernels; the dense depthwise kernel, biases and
    # BatchNormalization make the whole model a little less sparse.
    assert 0.74 < table.loc["pruned", "sparsity"] < SPARSITY
    assert table.loc["dense", "sparsity"] < 0.01
    # The flatbuffer folds BatchNormalization into the conv and keeps the zeros.
    assert abs(table.loc["int8.tflite", "parameters"] - params) < 0.01 * params
    assert 0.74 < table.loc["int8.tflite", "sparsity"] < 0.85

    assert table.loc["int8.tflite", "TFLite bytes"] == len(flat)
    assert table.loc["int8.tflite", "bytes"] == len(flat)
    for row in ("dense", "pruning", "pruned", "saved"):
        assert pd.isna(table.loc[row, "TFLite bytes"])
    assert table.loc["pruned", "gzip bytes"] < 0.6 * table.loc["dense", "gzip bytes"]
    assert table.loc["int8.tflite", "bytes"] < table.loc["pruned", "bytes"] / 3
    # A Keras object is measured stripped and without optimizer state.
    assert table.loc["pruning", "bytes"] == table.loc["pruned", "bytes"]
    assert (table["latency ms (batch 1)"] > 0).all()

    accuracy = table["accuracy"]
    assert accuracy["dense"] > 0.85
    assert accuracy["pruned"] > 0.8
    assert accuracy["pruning"] == accuracy["pruned"]
    assert abs(accuracy["saved"] - accuracy["pruned"]) < 1e-9
    assert abs(accuracy["int8.tflite"] - accuracy["pruned"]) < 0.05

    markdown = report.to_markdown(table)
    lines = markdown.splitlines()
    # cells are padded to their column's width: compare them stripped
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0][:3] == ["model", "parameters", "non-zero parameters"]
    assert len(lines) == 2 + len(table)
    assert all(len(row) == len(cells[0]) for row in cells)
    assert f"{len(flat):,}" in cells[5]
    assert "–" in cells[2]


def test_compare_quantization_aware_metrics_and_errors(digits):
    (x, y), _, _ = digits
    base = keras.Sequential([keras.Input((8, 8, 1), name="image"), keras.layers.Flatten(),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)])
    pruning = tfc.pruning.prune_low_magnitude(
        base, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0))
    qat = tfc.quantization.quantize_model(
        pruning, scheme=tfc.quantization.Default8BitPrunePreserveQuantizeScheme())
    data = (x[:64], y[:64])

    table = report.compare({"base": base, "qat": qat}, data, metric="auc", latency_runs=5)
    # Quantizer ranges, masks and step counters are not parameters.
    assert table.loc["qat", "parameters"] == base.count_params()
    assert 0.4 < table.loc["base", "auc"] < 1.0

    table = report.compare({"base": base}, data, metric=keras.metrics.SparseCategoricalAccuracy(),
                           latency_runs=5)
    assert "sparse_categorical_accuracy" in table.columns
    ours = report.compare({"base": base}, data, latency_runs=5).loc["base", "accuracy"]
    assert abs(table.loc["base", "sparse_categorical_accuracy"] - ours) < 1e-6

    # Dict inputs from a batched tf.data.Dataset; one sigmoid output.
    import tensorflow as tf

    features, clicks = examples.click_logs(n=256)
    click = examples.click_model()
    dataset = tf.data.Dataset.from_tensor_slices((features, clicks)).batch(64)
    table = report.compare({"click": click}, dataset, metric="auc", latency_runs=5)
    assert table.loc["click", "parameters"] == click.count_params()
    assert 0.0 <= table.loc["click", "auc"] <= 1.0
    table = report.compare({"click": click}, (features, clicks), metric="binary_crossentropy",
                           latency_runs=5)
    assert table.loc["click", "binary_crossentropy"] > 0

    with pytest.raises(ValueError, match="Unknown metric='bogus'"):
        report.compare({"base": base}, data, metric="bogus")
    with pytest.raises(ValueError, match="data has no labels"):
        report.compare({"base": base}, x[:64])
    with pytest.raises(FileNotFoundError, match="row 'gone'"):
        report.compare({"gone": "/nonexistent/model.tflite"}, data)
    with pytest.raises(TypeError, match="non-empty dict"):
        report.compare([base], data)


def test_cli_convert_inspect_report(trained, files):
    dense, _, _ = trained
    tmp, running = files
    model_path, flat_path = tmp / "model.keras", tmp / "model.tflite"
    data = str(tmp / "test.npz")

    code, out, err = _finish(running["convert"])
    assert code == 0, err[-2000:]
    assert flat_path.read_bytes()[4:8] == b"TFL3"
    assert f"wrote {flat_path} (TFLite int8): {flat_path.stat().st_size:,} bytes" in out
    assert "| agreement with Keras (top-1) |" in out  # verified in LiteRT

    inspect = _start("inspect", str(flat_path))
    compared = _start("report", str(model_path), str(flat_path), "--data", data)

    code, out, err = _finish(inspect)
    assert code == 0, err[-2000:]
    assert f"| bytes | {flat_path.stat().st_size:,} |" in out
    assert "| input | image | (None, 8, 8, 1) | float32 | none |" in out
    assert "| output | logits | (None, 10) | float32 | none |" in out
    assert "| FULLY_CONNECTED | int8 | int8, int8, int32 → int8 | 2 |" in out
    assert "| ops on int8 | CONV_2D ×3" in out

    code, out, err = _finish(compared)
    assert code == 0, err[-2000:]
    rows = _table(out)
    assert list(rows) == ["model.keras", "model.tflite"]
    assert rows["model.keras"]["TFLite bytes"] == "–"
    assert _number(rows["model.tflite"]["TFLite bytes"]) == flat_path.stat().st_size
    assert _number(rows["model.keras"]["bytes"]) == model_path.stat().st_size
    assert _number(rows["model.keras"]["parameters"]) == dense.count_params()
    assert _number(rows["model.keras"]["accuracy"]) > 0.85
    assert abs(_number(rows["model.tflite"]["accuracy"])
               - _number(rows["model.keras"]["accuracy"])) < 0.05


def test_cli_one_line_errors_and_unsafe(files, capsys):
    tmp, running = files

    code, _, err = _finish(running["lambda"])
    assert code == 1
    line = _error_line(err)
    assert line.startswith("tfcompress report: error:")
    assert "Lambda" in line and "--unsafe" in line
    assert "Traceback" not in err

    # Explicitly trusted, the same file loads (in-process: same code path).
    assert cli.main(["report", str(tmp / "lambda.keras"), "--data", str(tmp / "test.npz"),
                     "--unsafe"]) == 0
    assert list(_table(capsys.readouterr().out)) == ["lambda.keras"]

    checks = [
        (["convert", str(tmp / "missing.keras"), "--to", "float", "--out",
          str(tmp / "never.tflite")], "no such file: '" + str(tmp / "missing.keras")),
        (["convert", str(tmp / "lambda.keras"), "--to", "float", "--io-type", "int8",
          "--out", str(tmp / "x.tflite")], "use it with --to int8"),
        (["convert", str(tmp / "lambda.keras"), "--to", "float", "--out",
          str(tmp / "test.npz")], "pass --overwrite"),
        (["convert", str(tmp / "lambda.keras"), "--to", "saved_model", "--sparse",
          "--out", str(tmp / "sm")], "TFLite output only"),
        (["inspect", str(tmp / "test.npz")], "not a TFLite flatbuffer"),
        (["report", str(tmp / "lambda.keras"), "--data", str(tmp / "nowhere.npz")],
         "no such file"),
    ]
    for argv, expected in checks:  # in-process: main() is what the subprocess runs
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"tfcompress {argv[0]}: error:") and expected in err, err
        assert "\n" not in err
    assert not (tmp / "never.tflite").exists()


@pytest.mark.parametrize("argv, expected", [
    ([], ["convert", "inspect", "report", "demo"]),
    (["demo"], ["--prune-epochs", "--sparsity"]),
    (["convert"], ["--to MODE", "saved_model", "--io-type", "--sparse", "--overwrite",
                   "--unsafe", "tfcompress convert model.keras --to int8"]),
    (["inspect"], ["FILE.tflite", "tfcompress inspect model.tflite"]),
    (["report"], ["MODEL_OR_ARTIFACT", "--data D.npz", "--metric", "--unsafe"]),
    (["auto"], ["--max-bytes N", "--max-latency-ms T", "--max-drop D",
                "tfcompress auto model.keras --data train.npz --max-bytes"]),
])
def test_help(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out
