"""Summaries callbacks write what TensorBoard's own reader gets back.

Scalars, kept-weight histograms, QAT activation ranges, distillation loss
components and the custom scalars layouts that chart them, all read with
TensorBoard's EventAccumulator.
"""

import re

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

import tfcompress as tfc
from helpers import expected_sparsity, mlp, regression_data


def _events(directory):
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _by_plugin(acc, plugin):
    return [t for t in acc.Tags()["tensors"]
            if acc.SummaryMetadata(t).plugin_data.plugin_name == plugin]


def _scalars(directory):
    acc = _events(directory)
    out = {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
           for tag in _by_plugin(acc, "scalars")}
    out.update({tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]})
    return out


def _histograms(directory):
    """{tag: [(step, total count, lowest edge, highest edge)]}."""
    acc = _events(directory)
    out = {}
    for tag in _by_plugin(acc, "histograms"):
        rows = []
        for e in acc.Tensors(tag):
            buckets = tf.make_ndarray(e.tensor_proto)  # [k, 3]: left, right, count
            rows.append((e.step, int(round(buckets[:, 2].sum())), buckets[0, 0], buckets[-1, 1]))
        out[tag] = rows
    return out


def _charts(directory):
    """{chart title: [tag regex]} from the run's custom scalars layout."""
    acc = _events(directory)
    (tag,) = _by_plugin(acc, "custom_scalars")
    layout = layout_pb2.Layout.FromString(tf.make_ndarray(acc.Tensors(tag)[0].tensor_proto).item())
    return {chart.title: list(chart.multiline.tag) for c in layout.category for chart in c.chart}


def _charted(charts, title, tags):
    return sorted(t for t in tags if any(re.search(rx, t) for rx in charts[title]))


def _fit_pruned(schedule, epochs, n=128, **summaries):
    """An MLP pruned in `fit` (batch 16) with PruningSummaries(**summaries)."""
    model = tfc.pruning.prune_low_magnitude(mlp(), pruning_schedule=schedule)
    model.compile("adam", "mse")
    model.fit(*regression_data(n=n), batch_size=16, epochs=epochs, verbose=0, callbacks=[
        tfc.pruning.UpdatePruningStep(), tfc.pruning.PruningSummaries(**summaries)])
    return model


def test_sparsity_curve_follows_schedule(tmp_path):
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=30, frequency=3)
    _fit_pruned(schedule, epochs=5, log_dir=str(tmp_path), update_freq=1)  # 8 steps per epoch
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
    # one multi-line chart draws exactly the per-layer curves; another the global one
    charts = _charts(tmp_path / "pruning")
    assert _charted(charts, "sparsity per layer", scalars) == sorted(layer_tags)
    assert _charted(charts, "global sparsity", scalars) == ["pruning/global_sparsity"]


def test_kept_weight_histograms_count_the_unpruned_weights(tmp_path):
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=16, frequency=4)
    model = _fit_pruned(schedule, epochs=3, log_dir=str(tmp_path))  # 8 steps per epoch
    histograms = _histograms(tmp_path / "pruning")
    wrappers = tfc.core.find(model, tfc.pruning.PruneLowMagnitude)
    assert sorted(histograms) == sorted(f"pruning/kept/{w.name}/kernel" for w in wrappers)
    for w in wrappers:
        rows = histograms[f"pruning/kept/{w.name}/kernel"]
        assert [r[0] for r in rows] == [8, 16, 24]  # each epoch's end
        size = int(np.prod(w.masks[0].shape))
        for step, count, _, _ in rows:
            assert count == size - round(expected_sparsity(schedule, step) * size), (step, count)
        kernel, mask = np.asarray(w._targets[0]), np.asarray(w.masks[0])
        kept = np.abs(kernel[mask != 0])
        assert kept.min() >= np.abs(kernel[mask == 0]).max()
        assert np.isclose(rows[-1][2], kernel[mask != 0].min(), atol=1e-6)
        assert np.isclose(rows[-1][3], kernel[mask != 0].max(), atol=1e-6)

    _fit_pruned(schedule, epochs=1, log_dir=str(tmp_path / "off"), histograms=False)
    assert _histograms(tmp_path / "off" / "pruning") == {}


def test_qat_activation_ranges_are_logged_and_charted_per_layer(tmp_path):
    qat = tfc.quantization.quantize_model(mlp())
    qat.compile("adam", "mse")
    x, y = regression_data(n=64)
    qat.fit(x * 3.0, y, batch_size=16, epochs=2, verbose=0, callbacks=[
        tfc.quantization.QuantizationSummaries(log_dir=str(tmp_path), update_freq=1)])
    scalars = _scalars(tmp_path / "quantization")
    assert scalars and all(t.startswith("quantization/") for t in scalars)
    assert not [t for t in scalars if "kernel" in t]  # weight ranges are not activation ranges
    layers = [l for l in qat.layers
              if isinstance(l, (tfc.quantization.QuantizeWrapper, tfc.quantization.QuantizeLayer))]
    charts = _charts(tmp_path / "quantization")
    assert len(charts) == len(layers)
    for layer in layers:
        ranges = {v.name: float(np.asarray(v)) for v in layer.non_trainable_variables
                  if v.name.endswith(("_min", "_max")) and "kernel" not in v.name}
        assert ranges, layer.name
        for name, value in ranges.items():
            tag = f"quantization/{layer.name}/{name[:-4]}/{name[-3:]}"
            curve = scalars[tag]
            assert [s for s, _ in curve] == list(range(0, 9))
            assert curve[0][1] == (-6.0 if name.endswith("_min") else 6.0)  # before training
            assert np.isclose(curve[-1][1], value)  # the model's final range
            assert curve[1][1] != curve[0][1]  # the first batch sets the range
        assert _charted(charts, f"ranges of {layer.name}", scalars) == sorted(
            f"quantization/{layer.name}/{n[:-4]}/{n[-3:]}" for n in ranges)
    # the input range covers the scaled inputs seen in training
    assert scalars[f"quantization/{layers[0].name}/range/min"][-1][1] <= (x * 3.0).min() * 0.5


def test_compression_summaries_log_distillation_components_and_pruning(tmp_path):
    teacher, student = mlp(hidden=32), mlp(hidden=8)
    x, y = regression_data(n=128)
    teacher.compile("adam", "mse")
    teacher.fit(x, y, epochs=2, verbose=0)
    pruned = tfc.pruning.prune_low_magnitude(
        student, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=4))
    distiller = tfc.distillation.Distiller(
        teacher, pruned, tfc.distillation.FeatureDistillation(
            teacher_layer_name=teacher.layers[-1].name, student_layer_name=pruned.layers[-1].name),
        student_loss_weight=0.5)
    distiller.compile("adam", "mse")
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
        tfc.pruning.UpdatePruningStep(), tfc.CompressionSummaries(log_dir=str(tmp_path))])
    train = _scalars(tmp_path / "train")
    (component,) = [k for k in history.history if k.startswith("distillation_loss_")]
    components = ["epoch_student_loss", "epoch_distillation_loss", f"epoch_{component}",
                  "epoch_total_loss"]
    for tag in components:
        assert np.allclose([v for _, v in train[tag]], history.history[tag[len("epoch_"):]],
                           rtol=1e-5), tag
    charts = _charts(tmp_path / "distillation")
    assert _charted(charts, "loss components", train) == sorted(components)
    assert not (tmp_path / "quantization").exists()  # nothing quantized, nothing logged
    sparsity = _scalars(tmp_path / "pruning")["pruning/global_sparsity"]
    assert sparsity[-1] == (16, 0.5)


def test_compression_summaries_on_a_plain_model_write_only_keras_logs(tmp_path):
    model = mlp()
    model.compile("adam", "mse")
    model.fit(*regression_data(n=32), verbose=0,
              callbacks=[tfc.CompressionSummaries(log_dir=str(tmp_path))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_epoch_frequency_logs_each_epoch(tmp_path):
    _fit_pruned(tfc.pruning.ConstantSparsity(0.5, 0, frequency=1), epochs=3, n=64,
                log_dir=str(tmp_path))
    curve = _scalars(tmp_path / "pruning")["pruning/global_sparsity"]
    assert [s for s, _ in curve] == [0, 4, 8, 12]
    assert curve[0][1] == 0.0 and abs(curve[-1][1] - 0.5) < 0.01


def test_bad_log_dir():
    import pytest

    with pytest.raises(ValueError, match="log_dir"):
        tfc.pruning.PruningSummaries(log_dir="")
