"""Training killed mid-epoch and resumed with Keras's own `BackupAndRestore` ends exactly
where an uninterrupted run ends: the same masks, quantization ranges and weights."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from helpers import regression_data

EPOCHS, BATCH = 4, 16  # 256 samples: 16 steps per epoch


class _Crash(keras.callbacks.Callback):
    """Stands in for a killed job: raises at a given optimizer step."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            raise RuntimeError("killed")


def _base():
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(4)])


def _pruned():
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=48, frequency=4)
    return tfc.pruning.prune_low_magnitude(_base(), pruning_schedule=schedule), [
        tfc.pruning.UpdatePruningStep()]


def _qat():
    return tfc.quantization.quantize_model(_base()), []


def _distilled():
    keras.utils.set_random_seed(11)
    teacher = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu"),
                                keras.layers.Dense(4)])
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.7, begin_step=0, end_step=48, frequency=4)
    student = tfc.pruning.prune_low_magnitude(_base(), pruning_schedule=schedule)
    distiller = tfc.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=tfc.distillation.LogitsDistillation(temperature=2.0),
        student_loss_weight=0.5)
    return distiller, [tfc.pruning.UpdatePruningStep()]


def _build(make):
    keras.backend.clear_session()  # the same layer names in every run
    keras.utils.set_random_seed(3)
    model, callbacks = make()
    loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if make is _distilled else "mse")
    model.compile(keras.optimizers.Adam(1e-2), loss)
    return model, callbacks


def _state(model):
    """Every variable of the model: weights, masks, ranges, step counters."""
    return {v.path: np.asarray(v) for v in model.variables}


@pytest.mark.parametrize("make", [_pruned, _qat, _distilled], ids=["prune", "qat", "distill"])
def test_killed_and_resumed_with_backup_and_restore_matches_uninterrupted(make, tmp_path):
    x, y = regression_data(n=256)
    if make is _distilled:
        y = np.argmax(y, axis=-1)

    def fit(model, callbacks, backup=None, crash=None):
        extra = [keras.callbacks.BackupAndRestore(str(backup))] if backup else []
        extra += [_Crash(crash)] if crash else []
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                  callbacks=callbacks + extra)

    model, callbacks = _build(make)
    fit(model, callbacks)
    expected = _state(model)

    backup = tmp_path / "backup"
    model, callbacks = _build(make)
    with pytest.raises(RuntimeError, match="killed"):
        fit(model, callbacks, backup=backup, crash=40)  # mid-epoch 3, mid-schedule
    model, callbacks = _build(make)  # a new process: a fresh model, the same code
    fit(model, callbacks, backup=backup)
    resumed = _state(model)

    assert sorted(resumed) == sorted(expected)
    assert int(model.optimizer.iterations) == EPOCHS * 256 // BATCH
    for path, value in expected.items():
        np.testing.assert_allclose(resumed[path], value, rtol=1e-5, atol=1e-6, err_msg=path)
    kinds = {p.rsplit("/", 1)[-1] for p in expected}
    if make is not _qat:
        assert any(k.endswith("_mask") for k in kinds), kinds
    else:
        assert any(k.endswith(("_min", "_max")) for k in kinds), kinds
