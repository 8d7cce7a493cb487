"""README stays true: its test command is CI's, its recipes validate, every CLI command and option is documented."""

import pathlib
import re

import pytest

from tfcompress import cli, recipe

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


@pytest.mark.parametrize("command", ["demo", "convert", "inspect", "report", "run"])
def test_every_cli_command_and_option_is_in_the_readme(command):
    parser = cli._parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices) == {"demo", "convert", "inspect", "report", "run"}
    assert f"tfcompress {command}" in README
    for action in sub.choices[command]._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert option in README, (command, option)
