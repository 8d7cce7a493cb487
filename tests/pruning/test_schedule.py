import json

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.pruning import ConstantSparsity, PolynomialDecay


def polynomial_reference(step, initial, final, begin, end, power):
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return final + (initial - final) * (1 - p) ** power


@pytest.mark.parametrize("step", [0, 1, 5, 10, 37, 50, 99, 100, 150])
def test_polynomial_decay_matches_formula(step):
    schedule = PolynomialDecay(0.1, 0.8, begin_step=10, end_step=100, power=3, frequency=5)
    should, sparsity = schedule(step)
    expected_should = 10 <= step <= 100 and (step - 10) % 5 == 0
    assert bool(should) == expected_should
    np.testing.assert_allclose(
        float(sparsity), polynomial_reference(step, 0.1, 0.8, 10, 100, 3), rtol=1e-6)


@pytest.mark.parametrize("step,expected", [(0, False), (3, False), (4, True), (8, False),
                                           (10, True), (1000, True)])
def test_constant_sparsity_prunes_forever_on_frequency(step, expected):
    schedule = ConstantSparsity(0.5, begin_step=4, frequency=3)
    should, sparsity = schedule(step)
    assert bool(should) == expected
    assert float(sparsity) == 0.5


def test_constant_sparsity_stops_at_end_step():
    schedule = ConstantSparsity(0.5, begin_step=0, end_step=10, frequency=5)
    assert [s for s in range(30) if bool(schedule(s)[0])] == [0, 5, 10]


@pytest.mark.parametrize("kwargs,message", [
    (dict(initial_sparsity=0.0, final_sparsity=1.0, begin_step=0, end_step=10), "final_sparsity"),
    (dict(initial_sparsity=-0.1, final_sparsity=0.5, begin_step=0, end_step=10), "initial_sparsity"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=10, end_step=5), "end_step"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=10, frequency=0), "frequency"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=-1, end_step=10), "begin_step"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=-1), "end_step"),
])
def test_polynomial_decay_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PolynomialDecay(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(target_sparsity=1.2, begin_step=0), "target_sparsity"),
    (dict(target_sparsity=0.5, begin_step=0, frequency=-3), "frequency"),
    (dict(target_sparsity=0.5, begin_step=5, end_step=2), "end_step"),
])
def test_constant_sparsity_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConstantSparsity(**kwargs)


@pytest.mark.parametrize("schedule", [
    ConstantSparsity(0.6, 3, 90, 7),
    PolynomialDecay(0.2, 0.9, 1, 200, power=2, frequency=11),
])
def test_schedules_serialize(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(config)
    assert restored == schedule
    for step in (0, 1, 50, 200):
        assert bool(restored(step)[0]) == bool(schedule(step)[0])
        assert float(restored(step)[1]) == float(schedule(step)[1])


def test_tfmot_style_config_is_accepted():
    config = {"class_name": "PolynomialDecay", "config": PolynomialDecay(0, 0.5, 0, 10).get_config()}
    assert tfc.pruning.PolynomialDecay.from_config(config) == PolynomialDecay(0, 0.5, 0, 10)


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    # TFMOT's pruning guide: end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    end_step = np.ceil(1350 / 128).astype(np.int32) * 2
    poly = PolynomialDecay(np.float32(0.5), np.float64(0.8), np.int64(0), end_step,
                           power=np.int32(3), frequency=np.int16(5))
    const = ConstantSparsity(np.float32(0.25), np.int32(0), end_step=end_step,
                             frequency=np.uint8(5))
    for schedule in (poly, const):
        config = schedule.get_config()
        json.dumps(config)
        assert {k: type(v) for k, v in config.items()} == {
            k: int if k in ("begin_step", "end_step", "frequency", "power") else float
            for k in config}
    assert poly == PolynomialDecay(0.5, 0.8, 0, 22, power=3, frequency=5)
    assert const == ConstantSparsity(0.25, 0, end_step=22, frequency=5)
    assert bool(poly(20)[0]) and np.isclose(float(poly(22)[1]), 0.8)
    assert PolynomialDecay(0.0, 0.5, 0, 10, power=np.float32(0.5)).get_config()["power"] == 0.5


@pytest.mark.parametrize("kwargs,message", [
    (dict(end_step=np.ceil(1350 / 128) * 2), r"end_step must be an integer.*astype"),  # float64
    (dict(end_step=22.0), "end_step must be an integer"),
    (dict(end_step=22, frequency=True), "frequency must be an integer"),
    (dict(end_step=22, begin_step="0"), "begin_step must be an integer"),
])
def test_steps_that_are_not_integers_are_rejected_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PolynomialDecay(**{"initial_sparsity": 0.0, "final_sparsity": 0.5, "begin_step": 0,
                           **kwargs})


def test_sparsity_that_is_not_a_number_is_rejected():
    with pytest.raises(ValueError, match="target_sparsity must be a number"):
        ConstantSparsity("0.5", 0)
