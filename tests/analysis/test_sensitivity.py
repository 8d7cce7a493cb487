"""`tfcompress.analysis.sensitivity`: one layer at a time, no training, weights put back."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import examples


@pytest.fixture(scope="module")
def trained(digits):
    (x, y), (x_val, y_val), _ = digits
    keras.utils.set_random_seed(0)
    model = examples.digits_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    return model, (x_val, y_val)


def _accuracy(model, x, y):
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def test_every_layer_and_setting_is_measured_and_the_weights_come_back(trained, tmp_path):
    model, (x, y) = trained
    before = [w.copy() for w in model.get_weights()]
    table = tfc.analysis.sensitivity(model, (x, y), techniques=list(tfc.analysis.TECHNIQUES),
                                     verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    layers = ["conv2d", "conv2d_1", "conv2d_2", "dense", "logits"]
    assert list(dict.fromkeys(table.layer)) == layers
    settings = sum(len(v) for v in tfc.analysis.TECHNIQUES.values())
    assert len(table) == len(layers) * settings
    assert table.attrs["baseline"] == pytest.approx(_accuracy(model, x, y))
    np.testing.assert_allclose(table["drop"], table.attrs["baseline"] - table["metric"])
    # what the table says is what pruning that layer alone does
    kernel = model.get_layer("logits").kernel
    original = np.asarray(kernel)
    threshold = np.sort(np.abs(original).ravel())[::-1][round(original.size * 0.1) - 1]
    kernel.assign(np.where(np.abs(original) >= threshold, original, 0))
    by_hand = _accuracy(model, x, y)
    kernel.assign(original)
    row = table[(table.layer == "logits") & (table.technique == "prune") & (table.setting == 0.9)]
    assert float(row.metric.iloc[0]) == pytest.approx(by_hand)
    # the classifier cannot lose 95 % of itself for free; int8 costs (almost) nothing
    drops = table.set_index(["layer", "technique", "setting"])["drop"]
    assert drops["logits", "prune", 0.95] > 0.2
    assert abs(drops["dense", "quantize", 8]) < 0.02


def test_tensorboard_gets_one_line_per_layer_and_the_plot(trained, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    model, (x, y) = trained
    table = tfc.analysis.sensitivity(model, (x, y), techniques={"prune": (0.5, 0.9)},
                                     layers=["conv2d", "dense"], log_dir=str(tmp_path), verbose=0)
    events = event_accumulator.EventAccumulator(str(tmp_path / "sensitivity"),
                                                size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"sensitivity/prune/conv2d", "sensitivity/prune/dense"} <= set(tags["tensors"])
    steps = [e.step for e in events.Tensors("sensitivity/prune/conv2d")]
    assert steps == [50, 90]
    assert "sensitivity/prune" in tags["images"] or "sensitivity/prune" in tags["tensors"]
    figure = tfc.analysis.plot_sensitivity(table)
    assert [line.get_label() for line in figure.axes[0].get_lines()][:2] == ["conv2d", "dense"]


def test_composite_layers_tables_and_auc(tmp_path):
    logs, clicks = examples.zipf_click_logs(4000, users=500, items=100)
    model = examples.recommender("dcn", users=500, items=100, dim=8)
    x = {k: logs[k] for k in ("user", "item")}
    model.compile("adam", "binary_crossentropy")
    model.fit(x, clicks, batch_size=256, epochs=2, verbose=0)
    table = tfc.analysis.sensitivity(model, (x, clicks), metric="auc",
                                     techniques={"quantize": (8, 4), "prune": (0.9,)}, verbose=0)
    assert {"user_table", "item_table"} <= set(table.layer)
    # keras-rs FeatureCross's own Dense sublayers are found inside the composite layer
    assert sum(name not in ("user_table", "item_table") for name in set(table.layer)) >= 3
    assert 0.5 < table.attrs["baseline"] <= 1.0
    rowwise = table[(table.layer == "user_table") & (table.technique == "quantize")]
    assert (rowwise["drop"].abs() < 0.02).all()  # one scale per row: tables take int8/int4


def test_progress_bar_and_clear_errors(trained, capsys):
    model, (x, y) = trained
    tfc.analysis.sensitivity(model, (x, y), techniques={"quantize": (8,)}, layers=["dense"])
    assert "2/2" in capsys.readouterr().out
    with pytest.raises(ValueError, match="Unknown technique.*sensitivity knows prune"):
        tfc.analysis.sensitivity(model, (x, y), techniques=["distill"])
    with pytest.raises(ValueError, match=r"No layer\(s\) \['dens'\].*'dense'"):
        tfc.analysis.sensitivity(model, (x, y), layers=["dens"])
    with pytest.raises(ValueError, match="data must be"):
        tfc.analysis.sensitivity(model, x)
