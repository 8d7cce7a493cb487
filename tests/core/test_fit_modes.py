"""Masks update at exactly the schedule's steps, however Keras runs fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from helpers import Recorder, expected_sparsity, expected_zeros, mlp, regression_data

SCHEDULE = tfc.pruning.PolynomialDecay(0.0, 0.9, begin_step=2, end_step=20, power=1, frequency=3)


def _check_records(records, sizes, schedule=SCHEDULE):
    assert records, "no steps recorded"
    for step, zeros in records:
        target = expected_sparsity(schedule, step)
        for path, count in zeros.items():
            assert count == expected_zeros(sizes[path], target), (step, path, count)


def _pruned(schedule=SCHEDULE):
    return tfc.pruning.prune_low_magnitude(mlp(), pruning_schedule=schedule)


def _sizes(model):
    return {m.path: int(np.prod(m.shape))
            for w in tfc.core.find(model, tfc.pruning.PruneLowMagnitude) for m in w.masks}


@pytest.mark.parametrize("steps_per_execution,jit_compile", [(1, False), (8, True), (8, False)])
def test_masks_update_at_schedule_steps(steps_per_execution, jit_compile):
    x, y = regression_data(n=256)
    model = _pruned()
    model.compile("adam", "mse", steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    recorder = Recorder()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep(), recorder])
    steps = [s for s, _ in recorder.records]
    assert steps[-1] == 32
    if steps_per_execution == 8:
        assert steps == [8, 16, 24, 32]  # hooks fire once per execution
    _check_records(recorder.records, _sizes(model))
    # zeros stay zeros in what the layer computes
    wrapper = model.layers[0]
    effective = np.asarray(wrapper.layer.kernel) * np.asarray(wrapper.masks[0])
    assert (effective == 0).sum() == expected_zeros(effective.size, 0.9)


def test_forgotten_callback_is_a_clear_error():
    x, y = regression_data(n=32)
    model = _pruned()
    model.compile("adam", "mse")
    with pytest.raises(Exception, match="UpdatePruningStep"):
        model.fit(x, y, epochs=1, verbose=0)


def test_inference_does_not_need_the_callback():
    x, _ = regression_data(n=8)
    model = _pruned()
    model.predict(x, verbose=0)
    model(x, training=False)


def test_distiller_double_call_counts_each_step_once():
    x, _ = regression_data(n=256)
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(1)
    teacher = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="feat"),
                                keras.layers.Dense(2)])
    student = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, name="hidden"),
                          keras.layers.ReLU(name="feat"), keras.layers.Dense(2)]),
        pruning_schedule=SCHEDULE)
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=[
            keras.distillation.LogitsDistillation(temperature=2.0),
            keras.distillation.FeatureDistillation(
                loss="mse", teacher_layer_name="feat", student_layer_name="feat"),
        ])
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    recorder = Recorder()
    distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
                  callbacks=[tfc.pruning.UpdatePruningStep(), recorder])
    assert int(np.asarray(student.layers[0].pruning_step)) == 32
    _check_records(recorder.records, _sizes(student))


def _tfmot_guide_loop(model, optimizer, x, y, epochs=2, batch=8):
    """The custom loop of TFMOT's comprehensive guide, callbacks driven by hand."""
    loss_fn = keras.losses.MeanSquaredError()
    step_callback = tfc.sparsity.keras.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()
    records = []
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            step_callback.on_train_batch_begin(batch=-1)
            with tf.GradientTape() as tape:
                loss = loss_fn(y[start:start + batch], model(x[start:start + batch], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            records.append((len(records) + 1, tfc_zeros(model)))
        step_callback.on_epoch_end(batch=-1)
    return records


def tfc_zeros(model):
    from helpers import mask_zeros
    return mask_zeros(model)


@pytest.mark.parametrize("attach_optimizer", [True, False])
def test_custom_training_loop_driving_callbacks(attach_optimizer):
    x, y = regression_data(n=64)
    model = _pruned()
    optimizer = keras.optimizers.Adam()
    if attach_optimizer:
        model.optimizer = optimizer  # as TFMOT's guide does
    records = _tfmot_guide_loop(model, optimizer, x, y)
    assert len(records) == 16
    _check_records(records, _sizes(model))
