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
    for column in ("params", "non-zeros", "sparsity", "test accuracy", "bytes", "gzip bytes"):
        assert column in header
    pruned = next(l for l in lines if l.startswith("| pruned"))
    sparsity = float(pruned.split("|")[4])
    assert 0.7 < sparsity < 0.85
    assert (tmp_path / "pruned.keras").is_file()
    assert (tmp_path / "model_int8.tflite").is_file()
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    int8 = next(l for l in lines if l.startswith("| pruned + QAT"))
    assert float(int8.split("|")[5]) > 0.8  # int8 accuracy from LiteRT
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
