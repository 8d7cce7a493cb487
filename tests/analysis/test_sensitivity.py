"""`tfcompress.analysis.sensitivity`: one layer at a time, no training, weights put back."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import examples


@pytest.fixture(scope="module")
def trained(cnn, digits):
    _, (x_val, y_val), _ = digits
    return cnn, (x_val, y_val)


def _kernels(model):
    """Names of the digits CNN's Conv2D and Dense layers: 3 convolutions, dense, logits."""
    return [layer.name for layer in model.layers
            if type(layer) in (keras.layers.Conv2D, keras.layers.Dense)]


def _accuracy(model, x, y):
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def test_every_layer_and_setting_is_measured_and_the_weights_come_back(trained, tmp_path):
    model, (x, y) = trained
    before = [w.copy() for w in model.get_weights()]
    table = tfc.analysis.sensitivity(model, (x, y), techniques=list(tfc.analysis.TECHNIQUES),
                                     verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    layers = _kernels(model)
    assert list(dict.fromkeys(table.layer)) == layers and len(layers) == 5
    settings = sum(len(v) for k, v in tfc.analysis.TECHNIQUES.items() if k != "filters")
    filters = len(tfc.analysis.TECHNIQUES["filters"])
    # the logits' channels are the model's output: no filters rows for them
    assert len(table) == len(layers) * settings + (len(layers) - 1) * filters
    assert set(table[table.technique == "filters"].layer) == set(layers[:4])
    assert table.attrs["baseline"] == pytest.approx(_accuracy(model, x, y))
    np.testing.assert_allclose(table["drop"], table.attrs["baseline"] - table["metric"])
    # what the table says is what pruning that layer alone does
    kernel = model.get_layer(layers[4]).kernel
    original = np.asarray(kernel)
    threshold = np.sort(np.abs(original).ravel())[::-1][round(original.size * 0.1) - 1]
    kernel.assign(np.where(np.abs(original) >= threshold, original, 0))
    by_hand = _accuracy(model, x, y)
    kernel.assign(original)
    row = table[(table.layer == layers[4]) & (table.technique == "prune") & (table.setting == 0.9)]
    assert float(row.metric.iloc[0]) == pytest.approx(by_hand)
    # removing filters measures what the shrunk model computes
    row = table[(table.layer == layers[1]) & (table.technique == "filters")
                & (table.setting == 0.5)]
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    group = tfc.core.channels.channel_groups(copy)[layers[1]]
    gone = tfc.core.channels.weakest(group, group.size // 2)
    for use in group.uses:
        if use.role == "in":
            use.weight.assign(tfc.core.channels.unread(use, group, gone))
    small = tfc.shrink(copy)
    assert small.get_layer(layers[1]).filters == group.size // 2
    assert float(row.metric.iloc[0]) == pytest.approx(_accuracy(small, x, y), abs=1e-3)
    # the classifier cannot lose 95 % of itself for free; int8 costs (almost) nothing
    drops = table.set_index(["layer", "technique", "setting"])["drop"]
    assert drops[layers[4], "prune", 0.95] > 0.2
    assert abs(drops[layers[3], "quantize", 8]) < 0.02


def test_tensorboard_gets_one_line_per_layer_and_the_plot(trained, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    model, (x, y) = trained
    conv, dense = _kernels(model)[0], _kernels(model)[3]
    table = tfc.analysis.sensitivity(model, (x, y), techniques={"prune": (0.5, 0.9),
                                                                "low_rank": (0.25,)},
                                     layers=[conv, dense], log_dir=str(tmp_path), verbose=0)
    events = event_accumulator.EventAccumulator(str(tmp_path / "sensitivity"),
                                                size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {f"sensitivity/prune/{conv}", f"sensitivity/prune/{dense}"} <= set(tags["tensors"])
    steps = [e.step for e in events.Tensors(f"sensitivity/prune/{conv}")]
    assert steps == [50, 90]
    assert [e.step for e in events.Tensors(f"sensitivity/low_rank/{dense}")] == [25]
    assert "sensitivity/prune" in tags["images"] or "sensitivity/prune" in tags["tensors"]
    figure = tfc.analysis.plot_sensitivity(table)
    assert [line.get_label() for line in figure.axes[0].get_lines()][:2] == [conv, dense]


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
    dense = _kernels(model)[3]
    tfc.analysis.sensitivity(model, (x, y), techniques={"quantize": (8,)}, layers=[dense])
    assert "2/2" in capsys.readouterr().out
    with pytest.raises(ValueError, match="Unknown technique.*sensitivity knows prune"):
        tfc.analysis.sensitivity(model, (x, y), techniques=["distill"])
    with pytest.raises(ValueError, match=rf"No layer\(s\) \['dens'\].*'{dense}'"):
        tfc.analysis.sensitivity(model, (x, y), layers=["dens"])
    with pytest.raises(ValueError, match="data must be"):
        tfc.analysis.sensitivity(model, x)
