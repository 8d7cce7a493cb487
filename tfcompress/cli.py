"""The `tfcompress` command line: what each command does once its arguments are parsed.

The arguments are parsed by `tfcompress_cli` (standard library only, so
`--help` answers without loading TensorFlow); `tfcompress_cli.main` then calls
`run` here.

A `D.npz` file holds numpy arrays: `x` (or one array per model input, named
after the input) and, optionally, the labels `y`. Write one with
`numpy.savez("d.npz", x=x_test, y=y_test)`.

Models load with `keras.saving.load_model(path, safe_mode=True)`: a file with
a `Lambda` layer (Python code that runs on load) is refused unless `--unsafe`
is given. Errors print one line, `tfcompress <command>: error: ...`, and exit
with status 1 (`--debug` shows the traceback instead); a mistyped command line
gets argparse's usage line and status 2.
"""

import gzip
import os
import sys


class CommandError(Exception):
    """A problem with the command's arguments or files, reported as one line."""


def main(argv=None):
    """Runs the command line (what the `tfcompress` command runs); returns the exit status.

    Example:

    ```python
    from tfcompress import cli
    status = cli.main(["inspect", "no-such-file.tflite"])  # prints one error line
    ```
    """
    import tfcompress_cli

    return tfcompress_cli.main(argv)


def run(args):
    """Runs the parsed command `args` (from `tfcompress_cli.parser()`); returns the exit status."""
    try:
        if args.command == "demo":
            from tfcompress import demo

            epochs = (3, 2, 1) if args.quick else (args.epochs, args.prune_epochs,
                                                   args.qat_epochs)
            demo.run(out_dir=args.out, epochs=epochs[0], prune_epochs=epochs[1],
                     qat_epochs=epochs[2], sparsity=args.sparsity)
        else:
            {"convert": _convert, "inspect": _inspect, "report": _report,
             "run": _run, "auto": _auto}[args.command](args)
    except Exception as error:  # one clear line unless --debug
        if args.debug:
            raise
        print(f"tfcompress {args.command}: error: {_one_line(error, args)}", file=sys.stderr)
        return 1
    return 0


def _one_line(error, args):
    report = sys.modules.get("tfcompress.report")
    if report is not None and isinstance(error, report.UnsafeModelError):
        return (f"'{error.path}' holds Python code (a Lambda layer) that runs when it "
                "loads, so safe mode refuses it; rerun with --unsafe only if you trust "
                "where the file came from.")
    message = " ".join(str(error).split()) or type(error).__name__
    return message


# -- convert ---------------------------------------------------------------------

def _convert(args):
    _need_file(args.model, "the model")
    if args.data:
        _need_file(args.data, "--data")
    if args.to == "saved_model" and (args.sparse or args.io_type != "float"):
        raise CommandError(
            "--sparse and --io-type apply to TFLite output only; drop them for "
            "--to saved_model.")
    if args.io_type != "float" and args.to != "int8":
        raise CommandError(
            f"--io-type {args.io_type} quantizes the inputs and outputs of an integer "
            f"model; use it with --to int8 (got --to {args.to}).")
    if os.path.lexists(args.out) and not args.overwrite:
        raise CommandError(f"'{args.out}' already exists; pass --overwrite to replace it.")

    import tfcompress as tfc
    from tfcompress import report
    from tfcompress.export import signature, tflite

    model = report.load_model(args.model, safe_mode=not args.unsafe)
    x, y = _load_npz(args.data) if args.data else (None, None)
    calibrated = args.to in tflite.CALIBRATED
    if calibrated and x is None and not (
            args.to == "int8" and signature.is_quantization_aware(model)):
        raise CommandError(
            f"--to {args.to} quantizes activations, so it needs their ranges: pass "
            "--data D.npz with a few hundred training samples (array x), train the "
            "model quantization-aware first, or use --to dynamic (no data needed).")

    if args.to == "saved_model":
        tfc.export.to_saved_model(model, args.out, overwrite=args.overwrite)
        from tfcompress.export.verify import directory_size

        size, packed = directory_size(args.out)
        print(f"wrote {args.out} (SavedModel, serving_default): "
              f"{size:,} bytes, {packed:,} gzip bytes")
    else:
        flat = tfc.export.to_tflite(
            model, args.out, mode=args.to, representative_data=x if calibrated else None,
            io_type=args.io_type, sparse=args.sparse, overwrite=args.overwrite)
        print(f"wrote {args.out} (TFLite {args.to}): {len(flat):,} bytes, "
              f"{len(gzip.compress(flat, 9)):,} gzip bytes")
    if x is not None:
        print()
        print(tfc.export.verify(args.out, model, x if y is None else (x, y), latency_runs=50))


# -- inspect ---------------------------------------------------------------------

_KIND_TITLES = {
    "int8": "ops on int8", "int16": "ops on int16 (int8 weights)",
    "hybrid": "ops on float (int8 weights)", "float": "ops on float",
    "convert": "quantize / dequantize", "int": "index and shape ops",
}


def _inspect(args):
    _need_file(args.file, "the .tflite file")
    if os.path.isdir(args.file):
        raise CommandError(
            f"'{args.file}' is a directory; inspect reads .tflite files (for a "
            f"SavedModel, run `saved_model_cli show --all --dir {args.file}`).")
    from tfcompress.export.artifact import open_artifact

    _, _, flat = open_artifact(args.file, "inspect reads a .tflite file")
    print(inspect_text(flat, args.file))


def inspect_text(flatbuffer, label="<flatbuffer>"):
    """What `tfcompress inspect` prints for `flatbuffer` (bytes), as markdown.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    from tfcompress import cli
    flat = tfc.export.to_tflite(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    print(cli.inspect_text(flat))
    ```
    """
    from tfcompress.export import census

    ops = census.ops(flatbuffer)
    weights, sparse = census.weights(flatbuffer)
    rows = [("bytes", f"{len(flatbuffer):,}"),
            ("gzip bytes", f"{len(gzip.compress(flatbuffer, 9)):,}"),
            ("ops", f"{len(ops):,}"),
            ("weights (values by dtype)", ", ".join(
                f"{dtype} {count:,}" for dtype, count in sorted(weights.items())) or "none"),
            ("sparse-encoded weight tensors", str(sparse))]
    for kind, title in _KIND_TITLES.items():
        names = [op.name for op in ops if op.kind == kind]
        if names:
            counted = {n: names.count(n) for n in names}
            rows.append((title, ", ".join(
                n + (f" ×{c}" if c > 1 else "") for n, c in counted.items())))
    lines = [f"**inspect** `{label}`", "", "| property | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]

    interp = census.interpreter(flatbuffer)
    signatures = interp.get_signature_list()
    if signatures:
        tensors = []
        for key in signatures:
            runner = interp.get_signature_runner(key)
            tensors.append((f"signature `{key}`", runner.get_input_details(),
                            runner.get_output_details()))
    else:
        tensors = [("inputs and outputs (no signature)",
                    {d["name"]: d for d in interp.get_input_details()},
                    {d["name"]: d for d in interp.get_output_details()})]
    for title, inputs, outputs in tensors:
        lines += ["", title, "", "| | name | shape | dtype | quantization |",
                  "|---|---|---|---|---|"]
        for role, details in (("input", inputs), ("output", outputs)):
            for name, detail in details.items():
                lines.append(f"| {role} | {name} | {_shape(detail)} | "
                             f"{_dtype_name(detail['dtype'])} | {_quantization(detail)} |")

    lines += ["", "| op | kind | input dtypes → output dtypes | count |", "|---|---|---|---:|"]
    counted = {}
    for op in ops:
        key = (op.name, op.kind, ", ".join(op.inputs), ", ".join(op.outputs))
        counted[key] = counted.get(key, 0) + 1
    for (name, kind, ins, outs), count in counted.items():
        lines.append(f"| {name} | {kind} | {ins} → {outs} | {count} |")
    return "\n".join(lines)


def _shape(detail):
    dims = detail.get("shape_signature", detail["shape"])
    return "(" + ", ".join("None" if int(d) < 0 else str(int(d)) for d in dims) + ")"


def _dtype_name(dtype):
    import numpy as np

    return np.dtype(dtype).name


def _quantization(detail):
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales", [])
    if len(scales) == 0:
        return "none"
    zero_points = params.get("zero_points", [])
    if len(scales) == 1:
        return f"scale {float(scales[0]):.6g}, zero point {int(zero_points[0])}"
    return f"per-channel: {len(scales)} scales on axis {params.get('quantized_dimension')}"


# -- report ----------------------------------------------------------------------

def _report(args):
    for path in args.models:
        if not os.path.exists(path):
            raise CommandError(f"no such file or directory: '{path}'.")
    _need_file(args.data, "--data")
    x, y = _load_npz(args.data)
    if y is None:
        raise CommandError(
            f"'{args.data}' has no labels: the metric needs an array named y "
            "(e.g. numpy.savez('d.npz', x=x_test, y=y_test)).")
    from tfcompress import report

    names = [os.path.basename(os.path.normpath(p)) for p in args.models]
    if len(set(names)) < len(names):
        names = list(args.models)
    if len(set(names)) < len(names):
        raise CommandError("the same model is given twice; list each file once.")
    frame = report.compare(dict(zip(names, args.models)), (x, y), metric=args.metric,
                           output=args.output, safe_mode=not args.unsafe,
                           max_samples=args.max_samples)
    print(report.to_markdown(frame))


# -- run -------------------------------------------------------------------------

_DATA_KEYS = ("x", "y", "x_val", "y_val", "x_test", "y_test")


def _run(args):
    _need_file(args.recipe, "the recipe")
    _need_file(args.model, "--model")
    _need_file(args.data, "--data")
    from tfcompress import recipe, report

    loaded = recipe.load(args.recipe)  # validate before anything slow
    data = _group_inputs(_read_npz(args.data))
    unknown = sorted(set(data) - set(_DATA_KEYS))
    if unknown or "x" not in data or "y" not in data:
        raise CommandError(
            f"'{args.data}' must hold arrays x and y (and optionally x_val, y_val, "
            f"x_test, y_test; for a model with several inputs, one array per input as "
            f"x.<input name>, x_val.<input name>, ...); it has {sorted(data)}.")
    model = report.load_model(args.model, safe_mode=not args.unsafe)
    table = recipe.run(model, loaded, data, args.out, safe_mode=not args.unsafe,
                       overwrite=args.overwrite)
    print(report.to_markdown(table))
    print(f"\nwrote {', '.join(sorted(os.listdir(args.out)))} to {args.out}")


def _auto(args):
    _need_file(args.model, "the model")
    _need_file(args.data, "--data")
    budget = {key: value for key, value in (("tflite_bytes", args.max_bytes),
                                            ("gzip_bytes", args.max_gzip_bytes),
                                            ("latency_ms", args.max_latency_ms),
                                            ("params", args.max_params)) if value is not None}
    if not budget:
        raise CommandError("give a budget: --max-bytes N, --max-gzip-bytes N, --max-params P "
                           "and/or --max-latency-ms T.")
    from tfcompress import auto, report
    from tfcompress.export import atomic

    names = ["model.keras", "model_int8.tflite", "report.md", "pareto.png"]
    for name in names:
        atomic.check_target(os.path.join(args.out, name), args.overwrite)
    data = _group_inputs(_read_npz(args.data))
    if "x" not in data or "y" not in data or set(data) - {"x", "y", "x_val", "y_val"}:
        raise CommandError(f"'{args.data}' must hold arrays x and y (and optionally x_val, "
                           f"y_val; x.<input name> for several inputs); it has {sorted(data)}.")
    model = report.load_model(args.model, safe_mode=not args.unsafe, compile=True)
    result = auto.compress(model, data, budget, metric=args.metric, max_drop=args.max_drop,
                           epochs=args.epochs, qat_epochs=args.qat_epochs, distill=args.distill,
                           verbose=0)
    table = result.report.to_markdown(index=False)
    _save_keras(result.model, os.path.join(args.out, "model.keras"))
    atomic.write_bytes(os.path.join(args.out, "model_int8.tflite"), result.tflite,
                       overwrite=args.overwrite)
    atomic.write_bytes(os.path.join(args.out, "report.md"),
                       f"# tfcompress auto: budget {budget}\n\n{table}\n".encode(),
                       overwrite=args.overwrite)
    try:
        figure = result.plot()
    except ImportError:  # matplotlib is optional
        names.remove("pareto.png")
    else:
        import io

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        atomic.write_bytes(os.path.join(args.out, "pareto.png"), buffer.getvalue(),
                           overwrite=args.overwrite)
    print(table)
    print(f"\nwrote {', '.join(names)} to {args.out}")


def _save_keras(model, path):
    """`model.save(path)` through a temporary sibling and one rename."""
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    model.save(tmp)
    os.replace(tmp, path)


def _read_npz(path):
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise CommandError(
            f"cannot read '{path}' as a .npz file of arrays ({error}); write it with "
            "numpy.savez(path, x=..., y=...).") from None


def _group_inputs(arrays):
    """`{"x.user": a, "x.item": b, "y": c}` → `{"x": {"user": a, "item": b}, "y": c}`."""
    grouped = {}
    for key, array in arrays.items():
        split, dot, name = key.partition(".")
        if dot and split in ("x", "x_val", "x_test") and name:
            if not isinstance(grouped.setdefault(split, {}), dict):
                raise CommandError(f"the data has an array {split} and also {key}; give "
                                   f"either {split} (one input) or {split}.<input name> "
                                   "arrays, one per input.")
            grouped[split][name] = array
        elif isinstance(grouped.get(key), dict):
            raise CommandError(f"the data has {key}.<input name> arrays and also {key}; "
                               "give one of the two.")
        else:
            grouped[key] = array
    return grouped


# -- files -----------------------------------------------------------------------

def _need_file(path, what):
    if not os.path.exists(path):
        raise CommandError(f"no such file: '{path}' ({what}).")


def _load_npz(path):
    """(x, y) from an .npz: `x` (or {input name: array}) and the optional labels `y`."""
    arrays = _read_npz(path)
    y = arrays.pop("y", None)
    if "x" in arrays:
        x = arrays.pop("x")
        if arrays:
            raise CommandError(
                f"'{path}' has an array x and also {sorted(arrays)}; give either x (one "
                "input) or one array per input name, plus the labels y.")
        return x, y
    if not arrays:
        raise CommandError(
            f"'{path}' holds no inputs: add an array x, or one array per model input "
            "named after it (e.g. numpy.savez(path, x=x_test, y=y_test)).")
    return arrays, y


if __name__ == "__main__":
    sys.exit(main())
