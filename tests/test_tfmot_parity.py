"""Side by side with real TFMOT (tf_keras, in its own process): same masks at the same steps.

With learning rate 0 the weights never move, so the masks each framework
computes depend only on the schedule, the step counting and the magnitude
ranking: they must agree exactly, step by step. Skipped when the `tfmot`
extra is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfcompress as tfmot  # the migration: only this import changes

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None
    or importlib.util.find_spec("tf_keras") is None,
    reason="needs the tfmot extra (pip install tfcompress[tfmot])")

STEPS = 24
SCHEDULES = {
    "poly": ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.85, begin_step=2,
                                     end_step=20, power=3, frequency=3)),
    "const": ("ConstantSparsity", dict(target_sparsity=0.6, begin_step=5, end_step=-1, frequency=4)),
}

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras
    args = json.loads(sys.argv[1])
    weights = [np.asarray(w, "float32") for w in args["weights"]]
    out = {}
    for key, (cls, kwargs) in args["schedules"].items():
        schedule = getattr(tfmot.sparsity.keras, cls)(**kwargs)
        out[key + "_values"] = [[bool(schedule(s)[0]), float(schedule(s)[1])] for s in range(40)]
        base = keras.Sequential([keras.layers.Dense(12, input_shape=(10,)), keras.layers.Dense(3)])
        base.set_weights(weights)
        model = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
        model.compile(keras.optimizers.SGD(0.0), "mse")
        zeros = []
        class Rec(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                zeros.append([int(np.sum(np.asarray(m) == 0)) for l in model.layers
                              for _, m, _ in l.pruning_vars])
        x = np.ones((args["steps"], 10), "float32")
        model.fit(x, np.zeros((args["steps"], 3)), batch_size=1, shuffle=False, verbose=0,
                  callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), Rec()])
        out[key + "_zeros"] = zeros
        out[key + "_masks"] = [np.asarray(m).tolist() for l in model.layers
                               for _, m, _ in l.pruning_vars]
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def reference():
    keras.utils.set_random_seed(7)
    base = keras.Sequential([keras.Input((10,)), keras.layers.Dense(12), keras.layers.Dense(3)])
    weights = [w.tolist() for w in base.get_weights()]
    args = json.dumps({"weights": weights, "schedules": SCHEDULES, "steps": STEPS})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", WORKER, args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return base, json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("key", sorted(SCHEDULES))
def test_schedule_values_match_tfmot(reference, key):
    _, ref = reference
    cls, kwargs = SCHEDULES[key]
    schedule = getattr(tfmot.sparsity.keras, cls)(**kwargs)
    for step, (should, sparsity) in enumerate(ref[key + "_values"]):
        ours = schedule(step)
        assert bool(ours[0]) == should, step
        assert float(ours[1]) == pytest.approx(sparsity, abs=1e-6), step


@pytest.mark.parametrize("key", sorted(SCHEDULES))
def test_masks_match_tfmot_step_by_step(reference, key):
    base, ref = reference
    cls, kwargs = SCHEDULES[key]
    schedule = getattr(tfmot.sparsity.keras, cls)(**kwargs)
    model = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    zeros = []

    class Rec(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            zeros.append([int(np.sum(np.asarray(m) == 0)) for l in model.layers for m in l.masks])

    model.fit(np.ones((STEPS, 10), "float32"), np.zeros((STEPS, 3)), batch_size=1, shuffle=False,
              verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), Rec()])
    assert zeros == ref[key + "_zeros"]
    masks = [np.asarray(m) for l in model.layers for m in l.masks]
    for ours, theirs in zip(masks, ref[key + "_masks"]):
        np.testing.assert_array_equal(ours, np.asarray(theirs))
