"""What an exported artifact is: TFLite bytes or file, SavedModel directory, or Keras file."""

import os

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def open_artifact(artifact, accepted, keras_files=False):
    """Classifies `artifact` and reads it when it is a flatbuffer.

    Returns `(kind, label, payload)`: `("tflite", path or "<flatbuffer>",
    bytes)`, `("saved_model", path, path)` or, with `keras_files=True`,
    `("keras", path, path)` for a `.keras` / `.h5` file.

    Raises:
        TypeError: not bytes or a path (`accepted` says what is).
        FileNotFoundError: nothing at the path.
        ValueError: a directory without `saved_model.pb`, or a file that is
            not a TFLite flatbuffer (nor a Keras file when `keras_files`).

    Example:

    ```python
    from tfcompress.export.artifact import open_artifact
    kind, label, payload = open_artifact(b"\\0\\0\\0\\0TFL3", "bytes or a path")
    # kind == "tflite"
    ```
    """
    if isinstance(artifact, (bytes, bytearray, memoryview)):
        return "tflite", "<flatbuffer>", bytes(artifact)
    if not isinstance(artifact, (str, os.PathLike)):
        raise TypeError(f"{accepted}; got {type(artifact).__name__}.")
    path = os.fspath(artifact)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"'{path}' is a directory but not a SavedModel (it has no saved_model.pb); "
                "give the directory that tfcompress.export.to_saved_model (or "
                "model.export) wrote, the one holding saved_model.pb and variables/.")
        return "saved_model", path, path
    if not os.path.exists(path):
        raise FileNotFoundError(f"No file or directory at '{path}'.")
    if keras_files and path.lower().endswith(KERAS_SUFFIXES):
        return "keras", path, path
    with open(path, "rb") as handle:
        payload = handle.read()
    if payload[4:8] != b"TFL3":
        keras_too = f" nor a Keras model ({', '.join(KERAS_SUFFIXES)})" if keras_files else ""
        raise ValueError(f"'{path}' is not a TFLite flatbuffer (no TFL3 identifier){keras_too}.")
    check_whole_flatbuffer(payload, path)
    return "tflite", path, payload


def check_whole_flatbuffer(payload, label):
    """Raises ValueError when `payload` is not a whole, valid TFLite flatbuffer (e.g. truncated).

    Example:

    ```python
    from tfcompress.export.artifact import check_flatbuffer
    try:
        check_whole_flatbuffer(b"\\0\\0\\0\\0TFL3", "tiny.tflite")
    except ValueError as error:
        print(error)   # ... not a valid TFLite flatbuffer ...
    ```
    """
    from ai_edge_litert import interpreter as litert

    try:  # building an interpreter runs the flatbuffer verifier; no delegate, no tensors
        litert.Interpreter(model_content=bytes(payload), experimental_op_resolver_type=(
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    except ValueError as error:
        if "flatbuffer" not in str(error).lower():
            return  # readable, but e.g. an op this LiteRT lacks: left to the caller
        raise ValueError(
            f"'{label}' starts like a TFLite flatbuffer but is not a valid one "
            f"({len(payload):,} bytes: truncated or corrupted, e.g. by an interrupted "
            "copy); export it again, e.g. with tfcompress.export.to_tflite.") from None
