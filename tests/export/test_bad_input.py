"""Files that exist but are broken, and misspelt arguments, get messages that say so."""

import os

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import report


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(tmp / "good.keras")
    flat = tfc.export.to_tflite(model, tmp / "good.tflite")
    raw = (tmp / "good.keras").read_bytes()
    (tmp / "truncated.keras").write_bytes(raw[: len(raw) // 2])
    (tmp / "text.keras").write_text("not a model")
    (tmp / "flat.keras").write_bytes(flat)
    (tmp / "truncated.tflite").write_bytes(flat[: len(flat) // 2])
    (tmp / "not_saved_model").mkdir()
    (tmp / "not_saved_model" / "notes.txt").write_text("hello")
    tfc.export.to_saved_model(model, tmp / "saved")
    return tmp, model


@pytest.mark.parametrize("name, message", [
    ("truncated.keras", r"exists but is not a valid .keras file \(not a zip archive"),
    ("text.keras", "exists but is not a valid .keras file"),
    ("flat.keras", "a TFLite flatbuffer"),
    ("not_saved_model", "is a directory, not a Keras model file"),
    ("saved", "is a SavedModel directory, not a Keras model file"),
])
def test_broken_keras_files(files, name, message):
    tmp, _ = files
    with pytest.raises(ValueError, match=message):
        report.load_model(tmp / name)


def test_truncated_flatbuffer_and_directory_that_is_not_a_saved_model(files):
    tmp, model = files
    x = np.zeros((4, 4), "float32")
    with pytest.raises(ValueError, match="starts like a TFLite flatbuffer but is not a valid one"):
        tfc.export.verify(str(tmp / "truncated.tflite"), model, x)
    with pytest.raises(ValueError, match="row 't'.*truncated or corrupted"):
        report.compare({"t": str(tmp / "truncated.tflite")}, (x, np.zeros((4, 2))))
    with pytest.raises(ValueError, match="not a SavedModel .it has no saved_model.pb"):
        tfc.export.verify(str(tmp / "not_saved_model"), model, x)
    # the good ones still load
    assert tfc.export.verify(str(tmp / "good.tflite"), model, x).max_abs_diff < 1e-5
    assert report.load_model(tmp / "good.keras").count_params() == model.count_params()
    assert os.path.isfile(tmp / "saved" / "saved_model.pb")
