"""Pruning under tf.distribute.MirroredStrategy on two logical CPU devices.

Runs in a subprocess: logical devices must be configured before TensorFlow
initializes, which the test process has already done.
"""

import json
import os
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import json, os
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=24, frequency=4)
    with strategy.scope():
        base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(4)])
        model = tfc.pruning.prune_low_magnitude(base, pruning_schedule=schedule)
        model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = x @ rng.normal(size=(16, 4)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    out = {"replicas": strategy.num_replicas_in_sync, "masks": [], "kernels": [], "steps": []}
    for wrapper in model.layers:
        replicas = lambda v: [np.asarray(r.numpy()) for r in v.value.values]
        out["masks"].append([m.tolist() for m in replicas(wrapper.masks[0])])
        out["kernels"].append([k.tolist() for k in replicas(wrapper.layer.kernel)])
        out["steps"].append([int(s) for s in replicas(wrapper.pruning_step)])
    out["iterations"] = int(model.optimizer.iterations.value.numpy())
    out["global_sparsity"] = tfc.pruning.sparsity_logs(model)["global_sparsity"]
    print("RESULT" + json.dumps(out))
""")


def test_masks_identical_on_both_replicas_and_final_sparsity_reached():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert out["replicas"] == 2
    assert out["iterations"] == 32
    assert abs(out["global_sparsity"] - 0.75) < 0.01
    import numpy as np

    for masks, kernels, steps in zip(out["masks"], out["kernels"], out["steps"]):
        assert len(masks) == 2
        np.testing.assert_array_equal(masks[0], masks[1])
        np.testing.assert_array_equal(kernels[0], kernels[1])
        assert steps == [32, 32]
        assert abs(1 - np.mean(masks[0]) - 0.75) < 0.01
