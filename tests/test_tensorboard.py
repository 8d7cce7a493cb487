"""PruningSummaries writes scalars that TensorBoard's own reader gets back."""

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tfcompress as tfc
from helpers import expected_sparsity, mlp, regression_data


def _scalars(directory):
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        out[tag] = [(e.step, float(np.asarray(
            __import__("tensorflow").make_ndarray(e.tensor_proto)))) for e in acc.Tensors(tag)]
    for tag in acc.Tags()["scalars"]:
        out[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    return out


def test_sparsity_curve_follows_schedule(tmp_path):
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=30, frequency=3)
    model = tfc.pruning.prune_low_magnitude(mlp(), pruning_schedule=schedule)
    model.compile("adam", "mse")
    x, y = regression_data(n=128)  # 8 steps per epoch
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[
        tfc.pruning.UpdatePruningStep(),
        tfc.pruning.PruningSummaries(log_dir=str(tmp_path), update_freq=1)])
    scalars = _scalars(tmp_path / "pruning")
    global_curve = scalars["pruning/global_sparsity"]
    assert [s for s, _ in global_curve] == list(range(0, 41))
    for step, value in global_curve:
        assert abs(value - expected_sparsity(schedule, step)) < 0.01, (step, value)
    layer_tags = [t for t in scalars if t.endswith("kernel_mask")]
    assert len(layer_tags) == 2
    for tag in layer_tags:
        assert abs(scalars[tag][-1][1] - 0.8) < 0.01
    assert scalars["pruning/step"][-1] == (40, 40.0)
    # the regular TensorBoard logs are still there
    assert (tmp_path / "train").is_dir()


def test_epoch_frequency_logs_each_epoch(tmp_path):
    model = tfc.pruning.prune_low_magnitude(
        mlp(), pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    model.compile("adam", "mse")
    x, y = regression_data(n=64)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
        tfc.pruning.UpdatePruningStep(), tfc.pruning.PruningSummaries(log_dir=str(tmp_path))])
    curve = _scalars(tmp_path / "pruning")["pruning/global_sparsity"]
    assert [s for s, _ in curve] == [0, 4, 8, 12]
    assert curve[0][1] == 0.0 and abs(curve[-1][1] - 0.5) < 0.01


def test_bad_log_dir():
    import pytest

    with pytest.raises(ValueError, match="log_dir"):
        tfc.pruning.PruningSummaries(log_dir="")
