"""The `tfcompress` command line.

```
tfcompress demo [--out DIR] [--epochs N] [--prune-epochs N] [--sparsity S]
```
Errors print one line; `--debug` shows the traceback.
"""

import argparse
import os
import sys


def _parser():
    parser = argparse.ArgumentParser(
        prog="tfcompress",
        description="Compress Keras 3 models: pruning inside model.fit, strip, report.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="prune, QAT and export a CNN on scikit-learn digits; print a report",
        description="Train a small CNN on scikit-learn's digits, prune it to 80%% sparsity "
                    "inside fit, train it quantization-aware, export int8 TFLite and a "
                    "SavedModel, verify them in LiteRT and print a size/accuracy table.")
    demo.add_argument("--out", default="tfcompress_demo", help="output directory")
    demo.add_argument("--epochs", type=int, default=15, help="dense training epochs")
    demo.add_argument("--prune-epochs", type=int, default=10, help="pruning fine-tune epochs")
    demo.add_argument("--qat-epochs", type=int, default=3, help="quantization-aware epochs")
    demo.add_argument("--sparsity", type=float, default=0.8, help="final sparsity in [0, 1)")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.command == "demo":
            from tfcompress import demo

            demo.run(out_dir=args.out, epochs=args.epochs, prune_epochs=args.prune_epochs,
                     sparsity=args.sparsity, qat_epochs=args.qat_epochs)
    except Exception as error:  # one clear line unless --debug
        if args.debug:
            raise
        print(f"tfcompress {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
