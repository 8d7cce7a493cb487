"""The layout keeps the contract: no technique imports another; the core imports none."""

import ast
import os

import tfcompress

PACKAGE = os.path.dirname(tfcompress.__file__)
TECHNIQUES = ("pruning", "quantization", "distillation", "clustering", "factorization",
              "embeddings")


def _imports(folder):
    """`{module path: {tfcompress.<name> imported}}` for every module in `folder`."""
    found = {}
    for name in sorted(os.listdir(os.path.join(PACKAGE, folder))):
        if not name.endswith(".py"):
            continue
        path = os.path.join(PACKAGE, folder, name)
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfcompress"):
                parts = node.module.split(".")
                if len(parts) == 1:
                    names.update(alias.name for alias in node.names)
                else:
                    names.add(parts[1])
            elif isinstance(node, ast.Import):
                names.update(a.name.split(".")[1] for a in node.names
                             if a.name.startswith("tfcompress."))
        found[f"{folder}/{name}"] = names
    return found


def test_no_technique_imports_another():
    for technique in TECHNIQUES:
        for module, names in _imports(technique).items():
            others = names & (set(TECHNIQUES) - {technique})
            assert not others, f"{module} imports {sorted(others)}"


def test_the_core_imports_no_technique_and_no_workflow():
    for module, names in _imports("core").items():
        assert names <= {"core"}, f"{module} imports {sorted(names - {'core'})}"


def test_every_technique_registers_with_the_core():
    from tfcompress.core import techniques

    assert set(TECHNIQUES) <= {t.name for t in techniques.registered()}
    assert {"prune", "prune_filters", "quantize", "distill", "cluster",
            "factorize"} <= set(techniques.stages())
