"""README stays true: its test command is CI's, its recipes validate, every CLI command and option is documented."""

import pathlib
import re

import pytest

import tfcompress_cli
from tfcompress import recipe

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    (command,) = [line for block in _blocks("bash") for line in block.splitlines()
                  if "pytest" in line]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command.strip() in [line.strip() for line in ci]


def test_readme_recipes_validate():
    import json

    import yaml

    recipes = [json.loads(b) for b in _blocks("json")] + [yaml.safe_load(b)
                                                          for b in _blocks("yaml")]
    assert len(recipes) == 2
    for r in recipes:
        recipe.validate(r)
    # the table lists every key of every section
    for section, keys in recipe.SCHEMA.items():
        for key in keys:
            assert re.search(rf"\| `{section}` \|[^\n]*`{key}`|\| \|[^\n]*`{key}`", README), (
                section, key)


@pytest.mark.parametrize("command", ["demo", "convert", "inspect", "report", "run", "auto"])
def test_every_cli_command_and_option_is_in_the_readme(command):
    parser = tfcompress_cli.parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices) == {"demo", "convert", "inspect", "report", "run", "auto"}
    assert f"tfcompress {command}" in README
    for action in sub.choices[command]._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert option in README, (command, option)


def _public_symbols():
    """Classes and functions in the `__all__` of tfcompress and its subpackages,
    and those defined in its top-level modules without one."""
    import importlib
    import inspect

    packages = ["tfcompress", "tfcompress.core", "tfcompress.pruning", "tfcompress.quantization",
                "tfcompress.clustering", "tfcompress.factorization", "tfcompress.embeddings",
                "tfcompress.distillation",
                "tfcompress.export", "tfcompress.recipe", "tfcompress.analysis", "tfcompress.auto"]
    modules = ["tfcompress.report", "tfcompress.examples", "tfcompress.pruning.allocation",
               "tfcompress.demo", "tfcompress.core.summaries", "tfcompress.export.metrics",
               "tfcompress_cli"]
    found = {}
    for name in packages + modules:
        module = importlib.import_module(name)
        names = module.__all__ if name in packages else [
            n for n, o in vars(module).items()
            if not n.startswith("_") and getattr(o, "__module__", None) == name]
        for attr in names:
            obj = getattr(module, attr)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


# Examples that train for many seconds; each is the same call a test below makes.
_SLOW = {"tfcompress.demo.run": "test_cli.py demo",
         "tfcompress.recipe.runner.run": "test_recipe.py run tests",
         "tfcompress.recipe.pipeline.distill_and_prune": "test_distillation.py pipeline",
         "tfcompress.distillation.distiller.Distiller": "test_distillation.py fit tests",
         "tfcompress.report.compare": "test_report_cli.py compare tests",
         "tfcompress.auto.compress.compress": "tests/auto/test_compress.py"}
_PUBLIC = _public_symbols()


def test_every_public_symbol_has_a_docstring_example():
    assert len(_PUBLIC) >= 65  # discovery still finds the whole API
    missing = [name for name, obj in _PUBLIC.items() if "```python" not in (obj.__doc__ or "")]
    assert missing == []


@pytest.mark.parametrize("name", sorted(set(_PUBLIC) - set(_SLOW)))
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    import textwrap

    monkeypatch.chdir(tmp_path)
    for code in re.findall(r"```python\n(.*?)```", _PUBLIC[name].__doc__, flags=re.S):
        exec(compile(textwrap.dedent(code), f"<{name} example>", "exec"), {})
