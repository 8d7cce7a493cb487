import os
import subprocess
import sys


def _run(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "tfcompress.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_demo_prints_the_table_and_writes_logs(tmp_path):
    out = _run("demo", "--out", str(tmp_path), "--epochs", "3", "--prune-epochs", "2",
               "--qat-epochs", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    header = next(l for l in lines if l.startswith("| model |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for column in ("parameters", "non-zero parameters", "sparsity", "bytes", "gzip bytes",
                   "TFLite bytes", "latency ms (batch 1)", "accuracy"):
        assert column in columns
    rows = {cells[0]: dict(zip(columns, cells)) for cells in (
        [c.strip() for c in l.strip("|").split("|")] for l in lines if l.startswith("| ")
        and not l.startswith("| model |"))}
    assert 0.7 < float(rows["pruned (stripped)"]["sparsity"]) < 0.85
    int8 = rows["pruned + QAT (int8 .tflite)"]
    assert float(int8["accuracy"]) > 0.8  # int8 accuracy from LiteRT
    assert 0.7 < float(int8["sparsity"]) < 0.85  # the zeros survive QAT and conversion
    assert int(int8["TFLite bytes"].replace(",", "")) < 0.4 * int(
        rows["pruned (stripped)"]["bytes"].replace(",", ""))
    assert float(rows["pruned (SavedModel)"]["accuracy"]) > 0.7
    assert (tmp_path / "pruned.keras").is_file()
    assert (tmp_path / "model_int8.tflite").is_file()
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    logs = tmp_path / "logs"
    for run in ("pruning", "distillation", "train", "qat/quantization", "qat/pruning"):
        assert any((logs / run).iterdir()), run
    assert "tensorboard --logdir" in out.stdout


def test_help_and_one_line_errors(tmp_path):
    assert _run("--help").returncode == 0
    assert "--prune-epochs" in _run("demo", "--help").stdout
    bad = _run("demo", "--out", str(tmp_path), "--sparsity", "1.5", "--epochs", "1")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("tfcompress demo: error:")
    assert "final_sparsity" in bad.stderr
    assert "Traceback" not in bad.stderr
