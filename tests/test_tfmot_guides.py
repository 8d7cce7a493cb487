"""TFMOT's own Keras guides run as written on tfcompress and Keras 3.

Each script in tests/tfmot_guides/ is the code of one official TFMOT guide with
only the migration edits (`import tfcompress as tfmot`, `import keras`), an
offline stand-in for its dataset (small, so each runs in well under a minute),
and the few Keras 3 changes marked `# Keras 3:` in the script. Each runs in its
own process, as a user would run it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDES = Path(__file__).parent / "tfmot_guides"


def run_guide(name, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg",
           "TMPDIR": str(tmp_path)}  # the guides' tempfile.mkstemp files land in tmp_path
    proc = subprocess.run([sys.executable, str(GUIDES / f"{name}.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def number(output, label):
    """The number printed after `label` at the start of a line (the last time)."""
    values = re.findall(r"(?:^|\r)" + re.escape(label) + r"\s*([0-9.]+)", output, re.M)
    assert values, f"{label!r} not printed"
    return float(values[-1])


@pytest.mark.slow
def test_pruning_with_keras(tmp_path):
    out = run_guide("pruning_with_keras", tmp_path)
    baseline = number(out, "Size of gzipped baseline Keras model:")
    compressed = number(out, "Size of gzipped pruned and quantized TFlite model:")
    assert compressed < baseline / 4  # 80% sparse and int8
    assert number(out, "Pruned and quantized TFLite test_accuracy:") > 0.5


@pytest.mark.slow
def test_pruning_comprehensive_guide(tmp_path):
    out = run_guide("comprehensive_guide", tmp_path)
    assert (number(out, "Size of gzipped pruned model with stripping:")
            < number(out, "Size of gzipped pruned model without stripping:"))


@pytest.mark.slow
def test_pruning_with_sparsity_2_by_4(tmp_path):
    out = run_guide("pruning_with_sparsity_2_by_4", tmp_path)
    assert "Shape of Dense layer is (1024, 3136)" in out
    assert "Shape of the weight tensor is (64, 5, 5, 32)" in out


@pytest.mark.slow
def test_pruning_for_on_device_inference(tmp_path):
    run_guide("pruning_for_on_device_inference", tmp_path)
    from ai_edge_litert.interpreter import Interpreter

    # EXPERIMENTAL_SPARSITY stores the pruned 1x1 convolutions' weights sparsely.
    sparse = [sum(bool(d["sparsity_parameters"]) for d in
                  Interpreter(model_path=str(path)).get_tensor_details())
              for path in tmp_path.glob("*.tflite")]
    assert sorted(sparse) == [0, 2]  # the dense model, and the pruned one's two 1x1 convs


@pytest.mark.slow
def test_quantization_training_example(tmp_path):
    out = run_guide("training_example", tmp_path)
    tflite = number(out, "Quant TFLite test_accuracy:")
    keras_qat = number(out, "Quant TF test accuracy:")
    assert tflite > 0.5 and abs(tflite - keras_qat) < 0.05
    assert (number(out, "Quantized model in Mb:") < number(out, "Float model in Mb:") / 2)


@pytest.mark.slow
def test_quantization_comprehensive_guide(tmp_path):
    out = run_guide("training_comprehensive_guide", tmp_path)
    assert "quant_custom_layer" in out  # the custom layer got its QuantizeConfig


@pytest.mark.slow
def test_pqat_example(tmp_path):
    out = run_guide("pqat_example", tmp_path)
    pqat = out[out.index("PQAT Model sparsity:"):]
    assert "kernel: 50.00% sparsity" in pqat  # QAT kept the pruned zeros
    assert number(out, "PQAT model size:") < number(out, "QAT model size:")
    assert number(out, "Pruned and quantized TFLite test_accuracy:") > 0.5


def test_every_guide_script_has_a_test():
    scripts = {p.stem for p in GUIDES.glob("*.py") if not p.stem.startswith("_")}
    assert len(scripts) == 12, sorted(scripts)


@pytest.mark.parametrize("script", sorted(p.name for p in GUIDES.glob("[!_]*.py")))
def test_guide_scripts_keep_only_migration_imports(script):
    source = (GUIDES / script).read_text()
    assert not re.search(r"^\s*(import|from) (tensorflow_model_optimization|tf_keras)", source, re.M)
    assert "tf.keras" not in source and "from tensorflow import keras" not in source
    assert "import tfcompress as tfmot" in source and "import keras\n" in source


@pytest.mark.slow
def test_clustering_example(tmp_path):
    out = run_guide("clustering_example", tmp_path)
    baseline = number(out, "Size of gzipped baseline Keras model:")
    assert number(out, "Size of gzipped clustered TFlite model:") < baseline / 4
    assert (number(out, "Size of gzipped clustered and quantized TFlite model:")
            < number(out, "Size of gzipped clustered TFlite model:"))
    assert number(out, "Clustered test accuracy:") > number(out, "Baseline test accuracy:") - 0.05
    assert number(out, "Clustered and quantized TFLite test_accuracy:") > 0.8


def _most_int8_values_per_channel(path):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    most = 0
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            w = it.get_tensor(op["inputs"][1])
            most = max(most, max(np.unique(w[c]).size for c in range(w.shape[0])))
    return most


@pytest.mark.slow
def test_cqat_example(tmp_path):
    out = run_guide("cqat_example", tmp_path)
    assert "conv2d/kernel: 96 clusters" in out  # 8 per channel, 12 channels
    assert "dense/kernel: 8 clusters" in out
    assert number(out, "CQAT model size:") < number(out, "QAT model size:")
    assert number(out, "CQAT TFLite test_accuracy:") > number(out, "Clustered TF test accuracy:") - 0.03
    assert _most_int8_values_per_channel(tmp_path / "cqat_model.tflite") <= 8
    assert _most_int8_values_per_channel(tmp_path / "qat_model.tflite") > 8


@pytest.mark.slow
def test_pcqat_example(tmp_path):
    out = run_guide("pcqat_example", tmp_path)
    assert "conv2d/kernel: 8 clusters" in out and "dense/kernel: 8 clusters" in out
    assert number(out, "PCQAT model size:") < number(out, "QAT model size:")
    assert number(out, "Pruned, clustered and quantized TFLite test_accuracy:") > 0.8
    from ai_edge_litert.interpreter import Interpreter
    import numpy as np

    it = Interpreter(model_path=str(tmp_path / "pcqat_model.tflite"))
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            w = it.get_tensor(op["inputs"][1])
            assert np.mean(w == 0) >= 0.5 - 1e-3  # the pruned zeros, kept through PCQAT
    assert _most_int8_values_per_channel(tmp_path / "pcqat_model.tflite") <= 8


@pytest.mark.slow
def test_sparse_clustering_example(tmp_path):
    out = run_guide("sparse_clustering_example", tmp_path)
    kept = out.split("Sparsity preserved clustered Model sparsity:")[1]
    assert kept.count("50.00% sparsity") == 2  # both kernels keep the pruned half
    assert (number(out, "Sparsity preserved clustered and quantized TFLite model size:")
            < number(out, "Sparsity preserved clustered Model size:") / 10)
    assert number(out, "Pruned, clustered and quantized TFLite model accuracy:") > 0.8


@pytest.mark.slow
def test_clustering_comprehensive_guide(tmp_path):
    out = run_guide("clustering_comprehensive_guide", tmp_path)
    assert (number(out, "Size of gzipped clustered model with stripping:")
            < number(out, "Size of gzipped clustered model without stripping:"))
    assert "my_dense_layer" in out  # the ClusterableLayer (kernel and bias) was wrapped
