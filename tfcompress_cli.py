"""The `tfcompress` console command: parses its arguments before TensorFlow loads.

`tfcompress --help`, `tfcompress COMMAND --help` and argument errors answer
from argparse alone, in a fraction of a second: this module imports nothing
but the standard library. Only a command that runs imports `tfcompress`
(and so TensorFlow), with TensorFlow's C++ log lines (absl, CUDA probing,
CPU feature notes, converter statistics) and its INFO logging kept out of the
terminal unless `--debug` is given. The commands live in `tfcompress.cli`.

```
tfcompress demo    [--out DIR] [--epochs N] [--prune-epochs N] [--qat-epochs N] [--sparsity S]
                   [--quick]
tfcompress convert MODEL.keras --to MODE --out PATH [--data D.npz] [--io-type T] [--sparse]
                   [--overwrite] [--unsafe]
tfcompress inspect FILE.tflite
tfcompress report  MODEL_OR_ARTIFACT [MORE ...] --data D.npz [--metric M] [--unsafe]
tfcompress run     RECIPE --model M.keras --data D.npz --out DIR [--overwrite] [--unsafe]
tfcompress auto    MODEL.keras --data D.npz --max-bytes N [--max-gzip-bytes N] [--max-latency-ms T]
                   [--max-params P]
                   [--max-drop D] [--metric M] [--epochs N] [--qat-epochs N] [--distill]
                   --out DIR [--overwrite]
```
"""

import argparse
import contextlib
import logging
import os
import sys
import textwrap

TARGETS = ("float", "dynamic", "float16", "int8", "int16x8", "saved_model")
_RAW = argparse.RawDescriptionHelpFormatter


def _wrap(text):
    return textwrap.fill(text, 79)


def parser():
    """The `tfcompress` argument parser (standard library only: building it loads no TensorFlow).

    Example:

    ```python
    import tfcompress_cli
    args = tfcompress_cli.parser().parse_args(["inspect", "model.tflite"])
    # args.command == "inspect", args.file == "model.tflite"
    ```
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback on errors")
    parser = argparse.ArgumentParser(
        prog="tfcompress", formatter_class=_RAW,
        description=_wrap("Compress Keras 3 models: pruning, quantization-aware "
                          "training, TFLite/SavedModel export, and a report that "
                          "compares them."),
        epilog="Run `tfcompress COMMAND --help` for a command's options and examples.")
    parser.add_argument("--debug", action="store_true", help="show the traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    unsafe = argparse.ArgumentParser(add_help=False)  # for commands that load models
    unsafe.add_argument("--unsafe", action="store_true",
                        help="allow loading models (and a recipe's teacher) with Python code "
                             "in them (Lambda layers); only for files you trust")

    demo = sub.add_parser(
        "demo", parents=[common],
        help="distil, prune, QAT and export a CNN on scikit-learn digits; print a report",
        description="Train a teacher CNN on scikit-learn's digits, distil it into a small "
                    "CNN while pruning that to 80% sparsity inside fit, train it "
                    "quantization-aware, export int8 TFLite and a SavedModel, verify them "
                    "in LiteRT and print a size/accuracy table.")
    demo.add_argument("--out", default="tfcompress_demo", help="output directory")
    demo.add_argument("--epochs", type=int, default=15, help="teacher training epochs")
    demo.add_argument("--prune-epochs", type=int, default=10,
                      help="distillation + pruning epochs")
    demo.add_argument("--qat-epochs", type=int, default=3, help="quantization-aware epochs")
    demo.add_argument("--sparsity", type=float, default=0.8, help="final sparsity in [0, 1)")
    demo.add_argument("--quick", action="store_true",
                      help="the same stages with 3/2/1 epochs (a smoke run, about 20 s)")

    convert = sub.add_parser(
        "convert", parents=[common, unsafe], formatter_class=_RAW,
        help="convert a .keras model to TFLite (five modes) or a SavedModel",
        description=_wrap("Convert a Keras model file to a TFLite flatbuffer or a "
                          "SavedModel (serving_default signature). Pruning wrappers are "
                          "stripped; a quantization-aware model converts to int8 without "
                          "--data. With --data, the result is also verified against the "
                          "Keras model."),
        epilog="examples:\n"
               "  tfcompress convert model.keras --to int8 --out model.tflite --data calib.npz\n"
               "  tfcompress convert model.keras --to dynamic --out model.tflite\n"
               "  tfcompress convert model.keras --to saved_model --out serving/model/1")
    convert.add_argument("model", metavar="MODEL.keras", help="the Keras model file")
    convert.add_argument("--to", required=True, choices=TARGETS, metavar="MODE",
                         help=f"one of {', '.join(TARGETS)}: float32, int8 weights with "
                              "float activations, float16 weights, full integer, int16 "
                              "activations with int8 weights, or a SavedModel directory")
    convert.add_argument("--out", required=True, metavar="PATH",
                         help="the .tflite file (or SavedModel directory) to write")
    convert.add_argument("--data", metavar="D.npz",
                         help="sample inputs: calibrate --to int8/int16x8 (first 200 "
                              "samples), then verify the result on all of them")
    convert.add_argument("--io-type", default="float", choices=("float", "int8", "uint8"),
                         help="with --to int8: make the model's float inputs and outputs "
                              "int8 or uint8 too (default: float)")
    convert.add_argument("--sparse", action="store_true",
                         help="encode pruned (mostly zero) weights sparsely (TFLite only)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    inspect = sub.add_parser(
        "inspect", parents=[common], formatter_class=_RAW,
        help="show what a .tflite file computes in: ops, dtypes, sizes, inputs/outputs",
        description=_wrap("Print a .tflite file's size and gzip size, its weights by "
                          "dtype, every op with the dtypes it runs on (int8, float, "
                          "hybrid, ...), and its signature's inputs and outputs with "
                          "their quantization."),
        epilog="example:\n  tfcompress inspect model.tflite")
    inspect.add_argument("file", metavar="FILE.tflite", help="the TFLite flatbuffer")

    report = sub.add_parser(
        "report", parents=[common, unsafe], formatter_class=_RAW,
        help="compare models and artifacts: parameters, sparsity, bytes, latency, metric",
        description=_wrap("Measure each Keras model file, .tflite file or SavedModel "
                          "directory on the same labelled data and print one markdown "
                          "table: parameters, non-zeros, sparsity, bytes, gzip bytes, "
                          "TFLite bytes, batch-1 latency and the metric. Rows are named "
                          "after the files."),
        epilog="example:\n"
               "  tfcompress report dense.keras pruned.keras model_int8.tflite --data test.npz")
    report.add_argument("models", nargs="+", metavar="MODEL_OR_ARTIFACT",
                        help=".keras/.h5 files, .tflite files, SavedModel directories")
    report.add_argument("--data", required=True, metavar="D.npz",
                        help="labelled data: arrays x (or one per input name) and y")
    report.add_argument("--metric",
                        help="accuracy, auc, or a Keras metric name such as mse (default: "
                             "the first model's compiled metric, else accuracy for "
                             "classes, auc for one 0/1 output, mse for regression)")
    report.add_argument("--output", metavar="NAME",
                        help="which output the metric scores, for multi-output models")
    report.add_argument("--max-samples", type=int, metavar="N",
                        help="score at most N samples (default: all)")

    run = sub.add_parser(
        "run", parents=[common, unsafe], formatter_class=_RAW,
        help="run a recipe (prune, QAT, distil, export) and write artifacts + report",
        description=_wrap("Run a recipe file (JSON, or YAML with PyYAML installed) on a "
                          "Keras model: distil and/or prune, then quantization-aware "
                          "training, then export (an embeddings section compresses "
                          "the tables first). Writes model.keras, the .tflite files, "
                          "saved_model/ and report.md into --out, and prints the report. "
                          "See tfcompress.recipe for the format."),
        epilog="example:\n"
               "  tfcompress run recipe.json --model model.keras --data train.npz --out out/")
    run.add_argument("recipe", metavar="RECIPE", help="the recipe file (.json, .yaml, .yml)")
    run.add_argument("--model", required=True, metavar="M.keras", help="the model to compress")
    run.add_argument("--data", required=True, metavar="D.npz",
                     help="arrays x, y and optionally x_val, y_val (validation) and "
                          "x_test, y_test (the report; else x_val, y_val, else x, y); "
                          "for a model with several inputs, x.<input name> (and "
                          "x_val.<input name>, x_test.<input name>) instead of x")
    run.add_argument("--out", required=True, metavar="DIR", help="output directory")
    run.add_argument("--overwrite", action="store_true",
                     help="replace artifacts already in --out")

    auto = sub.add_parser(
        "auto", parents=[common, unsafe], formatter_class=_RAW,
        help="compress a model to a size (and latency) budget: int8 TFLite, verified",
        description=_wrap("Compress a trained Keras model to an int8 TFLite file within a "
                          "budget: measure each layer's sensitivity, plan per-layer ranks "
                          "with the least predicted metric drop, train the plan in "
                          "(fine-tuning, then QAT), export and measure the file (bytes, "
                          "LiteRT metric and latency). Writes model.keras, "
                          "model_int8.tflite, report.md (every configuration tried) and, "
                          "with matplotlib, pareto.png (metric against bytes) "
                          "into --out. See tfcompress.auto.compress."),
        epilog="example:\n"
               "  tfcompress auto model.keras --data train.npz --max-bytes 30000 --out out/")
    auto.add_argument("model", metavar="MODEL", help="the trained .keras model, compiled "
                                                    "with its loss")
    auto.add_argument("--data", required=True, metavar="D.npz",
                      help="arrays x, y and optionally x_val, y_val (the sensitivity, the "
                           "choice and the reported metric use them); several inputs: "
                           "x.<input name> arrays")
    auto.add_argument("--max-bytes", type=int, metavar="N", help="int8 TFLite bytes at most")
    auto.add_argument("--max-gzip-bytes", type=int, metavar="N",
                      help="the int8 TFLite file gzipped (a download) at most N bytes")
    auto.add_argument("--max-latency-ms", type=float, metavar="T",
                      help="LiteRT batch-1 latency at most, on this machine")
    auto.add_argument("--max-params", type=int, metavar="P", help="parameters at most")
    auto.add_argument("--max-drop", type=float, metavar="D",
                      help="the largest metric drop from the float model accepted")
    auto.add_argument("--metric", default="accuracy", help="accuracy (default), auc, or a "
                                                           "Keras metric name")
    auto.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    auto.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs (default 2)")
    auto.add_argument("--distill", action="store_true",
                      help="fine-tune with the original model as the teacher")
    auto.add_argument("--out", required=True, metavar="DIR", help="output directory")
    auto.add_argument("--overwrite", action="store_true",
                      help="replace artifacts already in --out")
    return parser


def main(argv=None):
    """Runs the `tfcompress` command line; returns the exit status.

    Example:

    ```python
    import tfcompress_cli
    status = tfcompress_cli.main(["inspect", "no-such-file.tflite"])  # prints one error line
    # status == 1
    ```
    """
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet = contextlib.nullcontext() if args.debug else _quiet_native_logs()
    with quiet:
        from tfcompress import cli

        return cli.run(args)


@contextlib.contextmanager
def _quiet_native_logs():
    """Sends file descriptor 2 to /dev/null while Python's `sys.stderr` keeps the terminal.

    TensorFlow's C++ code (absl's pre-initialisation notice, CUDA probing,
    `cpu_feature_guard`, the converter's `fully_quantize: 0, ...` lines)
    writes straight to descriptor 2, below any Python setting, and
    `TF_CPP_MIN_LOG_LEVEL` does not reach absl's first lines. Python-level
    output (our errors, warnings) goes through `sys.stderr`, which is
    pointed at a copy of the original descriptor.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:  # only a sys.stderr that writes to descriptor 2 needs moving aside
        moved = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        moved = False
    saved_fd, saved_stderr = os.dup(2), sys.stderr
    if moved:
        sys.stderr = os.fdopen(os.dup(saved_fd), "w", buffering=1, errors="backslashreplace")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # "Assets written to ..."
    try:
        yield
    finally:
        sys.stderr.flush()
        if moved:
            sys.stderr.close()
            sys.stderr = saved_stderr
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


if __name__ == "__main__":
    sys.exit(main())
