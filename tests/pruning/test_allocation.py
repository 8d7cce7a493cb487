"""Allocation of sparsity among layers (uniform / global / ERK) and the Fisher criterion."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress import examples
from tfcompress.pruning import allocation

L = keras.layers


def _masks(model):
    """`{wrapper name: [mask arrays]}` of every PruneLowMagnitude in `model`."""
    return {w.name: [np.asarray(m).astype(bool) for m in w.masks]
            for w in tfc.core.find(model, tfc.pruning.PruneLowMagnitude)}


def _sparsities(model):
    return {name: 1 - masks[0].mean() for name, masks in _masks(model).items()}


def _overall(model):
    masks = [m for ms in _masks(model).values() for m in ms]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.size for m in masks)


def _exact(model, sparsity):
    """The model keeps round(n * (1 - sparsity)) of its n pruned weights, up to the
    rounding of a count (one entry for the model, or for each weight under ERK)."""
    masks = [m for ms in _masks(model).values() for m in ms]
    total = sum(m.size for m in masks)
    return abs(sum(int(m.sum()) for m in masks) - round(total * (1 - sparsity))) <= len(masks)


def _prune_digits(digits, steps=40, epochs=1, compile_kwargs=None, **options):
    (x, y), _, _ = digits
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=30, frequency=10)
    model = tfc.pruning.prune_low_magnitude(examples.digits_cnn(), pruning_schedule=schedule,
                                            **options)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  **(compile_kwargs or {}))
    model.fit(x, y, batch_size=32, epochs=epochs, steps_per_epoch=steps, verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    return model


def test_erk_shares_keep_small_layers_dense_and_average_to_the_target():
    shapes = [(3, 3, 1, 16), (3, 3, 16, 32), (512, 64), (64, 10)]
    sizes = np.array([144, 4608, 32768, 640])
    for target in (0.5, 0.8, 0.9, 0.99):
        shares = np.array(allocation.erk_sparsities(shapes, target))
        assert abs(shares @ sizes / sizes.sum() - target) < 1e-9
        assert (shares >= 0).all() and (shares < 1).all()
        # sparser as (sum of dims) / (product of dims) falls: conv1, classifier, dense, conv2
        assert shares[0] <= shares[3] <= shares[2] < shares[1]
    # at low sparsity the small layers saturate: kept whole, the others take it all
    shares = allocation.erk_sparsities(shapes, 0.3)
    assert shares[0] == 0.0 and shares[3] == 0.0


def test_global_masks_rank_the_whole_model_and_protect_each_weight():
    big = tf.constant([[8.0, 7.0, 6.0, 5.0], [4.0, 3.0, 2.0, 1.0]])
    small = tf.constant([0.05, 0.04, 0.03, 0.02, 0.01, 0.009, 0.008, 0.007])
    ones = [tf.ones([2, 4], "bool"), tf.ones([8], "bool")]
    kept = allocation.global_masks([big, small], ones, 0.5, min_kept=0.25)
    # 8 of 16 kept: small keeps its own best 2, the other 6 go to the largest anywhere
    np.testing.assert_array_equal(kept[0], [[True] * 4, [True, True, False, False]])
    np.testing.assert_array_equal(kept[1], [True, True] + [False] * 6)
    # a lower floor: small keeps its one best entry (never none), big gets the rest
    kept = allocation.global_masks([big, small], ones, 0.5, min_kept=0.0)
    assert int(np.sum(kept[0])) == 7 and np.asarray(kept[1]).tolist() == [True] + [False] * 7
    # entries already out stay out, however large
    out = [tf.constant([[False] + [True] * 7]), tf.ones([8], "bool")]
    kept = allocation.global_masks([tf.reshape(big, [1, 8]), small], out, 0.5, min_kept=0.25)
    assert not bool(kept[0][0, 0]) and int(np.sum(kept[0])) == 6


@pytest.mark.parametrize("method", ["global", "erk"])
def test_allocations_reach_the_overall_sparsity_exactly_with_unequal_layers(method, digits):
    model = _prune_digits(digits, allocation=method)
    assert _exact(model, 0.9)  # over the pruned weights
    layers = _sparsities(model)
    assert max(layers.values()) - min(layers.values()) > 0.2  # not uniform
    if method == "erk":
        shapes = [tuple(m.shape) for ms in _masks(model).values() for m in ms]
        expected = allocation.erk_sparsities(shapes, 0.9)
        for masks, share in zip([m for ms in _masks(model).values() for m in ms], expected):
            assert abs(1 - masks.mean() - share) <= 1 / masks.size  # rounding of a count
    else:  # every weight keeps its floor
        assert all(1 - s >= allocation.MIN_KEPT - 1e-9 for s in layers.values())


def test_global_allocation_keeps_the_largest_magnitudes_of_the_model(digits):
    model = _prune_digits(digits, steps=31, allocation="global")  # last update at step 30
    wrappers = tfc.core.find(model, tfc.pruning.PruneLowMagnitude)
    kept = np.concatenate([np.abs(np.asarray(w.targets[0]))[np.asarray(w.masks[0]).astype(bool)]
                           for w in wrappers])
    pruned = np.concatenate([np.abs(np.asarray(w.targets[0]))[~np.asarray(w.masks[0]).astype(bool)]
                             for w in wrappers])
    # the floors aside, what was kept outranks what was pruned (pruned weights get no
    # gradient, but Adam's momentum moves them a little after the last update)
    assert np.quantile(kept, 0.1) > np.quantile(pruned, 0.9)


def test_uniform_stays_tfmots_way(digits):
    model = _prune_digits(digits)
    for masks in _masks(model).values():
        assert abs(1 - masks[0].mean() - 0.9) <= 1 / masks[0].size


def test_fisher_prunes_weights_that_never_get_a_gradient_first():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    x[:, :4] = 0.0  # inputs 0-3 are always zero: their kernel rows get no gradient
    y = x[:, 4:] @ rng.normal(size=(4, 2)).astype("float32")
    results = {}
    for criterion in ("magnitude", "fisher"):
        keras.utils.set_random_seed(0)
        base = keras.Sequential([keras.Input((8,)), L.Dense(2, name="d")])
        base.layers[0].kernel.assign(np.r_[np.full((4, 2), 3.0), np.full((4, 2), 0.1)])
        model = tfc.pruning.prune_low_magnitude(
            base, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, begin_step=20, frequency=100),
            criterion=criterion)
        model.compile(keras.optimizers.SGD(0.01), "mse")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[tfc.pruning.UpdatePruningStep()])
        wrapper = tfc.core.find(model, tfc.pruning.PruneLowMagnitude)[0]
        results[criterion] = np.asarray(wrapper.masks[0]).astype(bool)
        if criterion == "fisher":
            fisher = np.asarray(wrapper.fisher[0])
            assert (fisher[:4] == 0).all() and (fisher[4:] > 0).all()
    assert results["magnitude"][:4].all() and not results["magnitude"][4:].any()
    assert not results["fisher"][:4].any() and results["fisher"][4:].all()


def test_fisher_global_save_load_resume(tmp_path, digits):
    (x, y), _, _ = digits
    model = _prune_digits(digits, steps=15, criterion="fisher", allocation="global")
    path = str(tmp_path / "half.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    wrapper = tfc.core.find(loaded, tfc.pruning.PruneLowMagnitude)[0]
    assert (wrapper.allocation, wrapper.criterion) == ("global", "fisher")
    before = _masks(loaded)
    np.testing.assert_array_equal(np.asarray(wrapper.fisher[0]), np.asarray(
        tfc.core.find(model, tfc.pruning.PruneLowMagnitude)[0].fisher[0]))
    loaded.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loaded.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=25, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    assert _exact(loaded, 0.9)
    after = _masks(loaded)
    for name in before:  # masks only shrink
        assert not (after[name][0] & ~before[name][0]).any()


@pytest.mark.parametrize("steps_per_execution,jit_compile", [(4, True), (3, False)])
def test_fit_modes_reach_the_overall_sparsity(steps_per_execution, jit_compile, digits):
    for method in ("global", "erk"):
        model = _prune_digits(digits, allocation=method, criterion="fisher", compile_kwargs=dict(
            steps_per_execution=steps_per_execution, jit_compile=jit_compile))
        assert _exact(model, 0.9)
        step = {int(np.asarray(w.pruning_step))
                for w in tfc.core.find(model, tfc.pruning.PruneLowMagnitude)}
        assert step == {40}


def test_distiller_student_with_global_allocation(digits):
    (x, y), _, _ = digits
    teacher = examples.digits_cnn()
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, 0, 20, frequency=5)
    student = tfc.pruning.prune_low_magnitude(examples.digits_cnn(), pruning_schedule=schedule,
                                              allocation="global")
    distiller = tfc.distillation.Distiller(teacher=teacher, student=student,
                                           distillation_losses=tfc.distillation.LogitsDistillation())
    distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=25, verbose=0,
                  callbacks=[tfc.pruning.UpdatePruningStep()])
    assert _exact(distiller.student, 0.8)


MIRRORED = """
import json
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import tfcompress as tfc

keras.utils.set_random_seed(0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=16, frequency=4)
with strategy.scope():
    base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    model = tfc.pruning.prune_low_magnitude(base, pruning_schedule=schedule,
                                            allocation="ALLOCATION", criterion="fisher")
    model.compile("adam", "mse")
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 16)).astype("float32")
y = x @ rng.normal(size=(16, 4)).astype("float32")
model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[tfc.pruning.UpdatePruningStep()])
masks = [[np.asarray(r.numpy()).astype(int).tolist() for r in m.value.values]
         for w in tfc.core.find(model, tfc.pruning.PruneLowMagnitude) for m in w.masks]
print("RESULT" + json.dumps(masks))
"""


@pytest.mark.parametrize("method", ["global", "erk"])
def test_mirrored_strategy_gives_the_same_masks_on_every_replica(method):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", MIRRORED.replace("ALLOCATION", method)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    masks = json.loads(line[len("RESULT"):])
    assert len(masks) == 3
    for copies in masks:
        assert len(copies) == 2 and copies[0] == copies[1]
    kept = sum(np.sum(c[0]) for c in masks)
    total = sum(np.size(c[0]) for c in masks)
    assert abs(1 - kept / total - 0.8) < 1e-3


def test_bad_allocation_criterion_and_mixed_schedules_are_clear_errors(digits):
    base = examples.digits_cnn()
    with pytest.raises(ValueError, match="allocation must be one of 'uniform', 'global', 'erk'"):
        tfc.pruning.prune_low_magnitude(base, allocation="lamp")
    with pytest.raises(ValueError, match="criterion must be one of 'magnitude', 'fisher'"):
        tfc.pruning.prune_low_magnitude(base, criterion="taylor")
    with pytest.raises(ValueError, match="block_size and sparsity_m_by_n choose their own"):
        tfc.pruning.prune_low_magnitude(base, allocation="global", block_size=(2, 2))
    layers = [tfc.pruning.PruneLowMagnitude(
        L.Dense(8), pruning_schedule=tfc.pruning.ConstantSparsity(s, 0), allocation="global")
        for s in (0.5, 0.7)]
    model = keras.Sequential([keras.Input((4,))] + layers)
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="Give them one pruning_schedule"):
        model.fit(np.ones((8, 4)), np.ones((8, 8)), verbose=0,
                  callbacks=[tfc.pruning.UpdatePruningStep()])
