import os
import subprocess
import sys

import pytest


def _run(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "tfcompress.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_demo_prints_the_table_and_writes_logs(tmp_path):
    out = _run("demo", "--out", str(tmp_path), "--epochs", "3", "--prune-epochs", "2",
               "--qat-epochs", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    # cells are padded to their column's width: compare them stripped
    table = [[c.strip() for c in l.strip("|").split("|")] for l in lines if l.startswith("| ")]
    columns = next(cells for cells in table if cells[0] == "model")
    for column in ("parameters", "non-zero parameters", "sparsity", "bytes", "gzip bytes",
                   "TFLite bytes", "latency ms (batch 1)", "accuracy"):
        assert column in columns
    rows = {cells[0]: dict(zip(columns, cells)) for cells in table if cells is not columns}
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


# -- a fast, quiet command line --------------------------------------------------

import shutil  # noqa: E402


import tfcompress_cli  # noqa: E402

_NOISE = ("absl", "InitializeLog", "cuda", "cpu_feature_guard", "oneDNN", "fully_quantize",
          "Assets written", "Saved artifact", "W0000", "I0000", "E0000")


def _command():
    """The installed console script, as a user runs it (else the same entry point via -m)."""
    found = shutil.which("tfcompress", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "tfcompress_cli"]


def _plain_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "COLUMNS": "100", **extra}


@pytest.mark.parametrize("args", [[], ["demo"], ["convert"], ["inspect"], ["report"], ["run"],
                                  ["auto"]])
def test_help_is_argparse_alone_and_loads_no_tensorflow(args, monkeypatch):
    out = subprocess.run(_command() + args + ["--help"], capture_output=True, text=True,
                         env=_plain_env(), timeout=60)
    assert out.returncode == 0
    assert out.stderr == ""
    monkeypatch.setenv("COLUMNS", "100")
    parser = tfcompress_cli.parser()
    if args:
        (sub,) = [a for a in parser._actions if a.dest == "command"]
        parser = sub.choices[args[0]]
    assert out.stdout == parser.format_help()

    probe = ("import sys, tfcompress_cli\n"
             "try:\n    tfcompress_cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('loaded:', sorted(m for m in ('tensorflow', 'keras', 'tfcompress', 'numpy')"
             " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe] + args + ["--help"], capture_output=True,
                         text=True, env=_plain_env(), timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "loaded: []", out.stdout[-500:]


def test_argument_errors_answer_before_tensorflow_loads():
    for args, message in ((["convert", "m.keras"], "the following arguments are required"),
                          (["bogus"], "invalid choice"),
                          (["convert", "m.keras", "--to", "int4", "--out", "x"], "invalid choice")):
        out = subprocess.run(_command() + args, capture_output=True, text=True,
                             env=_plain_env(), timeout=60)
        assert out.returncode == 2
        assert out.stdout == ""
        assert out.stderr.startswith("usage: tfcompress")
        assert message in out.stderr
        assert not any(noise in out.stderr for noise in _NOISE)


def test_a_real_command_prints_no_tensorflow_chatter(tmp_path):
    import keras
    import numpy as np

    keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)]).save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=np.random.rand(40, 6).astype("float32"))
    out = subprocess.run(_command() + [
        "convert", str(tmp_path / "m.keras"), "--to", "int8", "--out", str(tmp_path / "m.tflite"),
        "--data", str(tmp_path / "d.npz")], capture_output=True, text=True, env=_plain_env(),
        timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == "", out.stderr[-2000:]
    assert out.stdout.startswith("wrote ")
    assert not any(noise in out.stdout for noise in _NOISE), out.stdout
    # an error is still one line on stderr, and the converter's chatter stays out of it
    out = subprocess.run(_command() + [
        "convert", str(tmp_path / "m.keras"), "--to", "int8", "--out", str(tmp_path / "m.tflite"),
        "--data", str(tmp_path / "d.npz")], capture_output=True, text=True, env=_plain_env(),
        timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"tfcompress convert: error: '{tmp_path / 'm.tflite'}' already exists; pass "
        "--overwrite to replace it."]
