"""Every `spinetrack COMMAND --option` the README and docs/ write exists in the CLI.

Read from code blocks (continued lines joined, `# comments` dropped) and from inline code spans
(which may wrap across lines): after `spinetrack COMMAND`, every `--option` up to the next `|`,
`;`, `&&` must be an option of that command (or a global one: --debug, --json, --help).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from flows.app import app
from flows.cli import _register

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SPAN = re.compile(r"`([^`]*)`")
COMMAND = re.compile(r"(?:^|[\s(\[])spinetrack\s+([a-z][a-z0-9-]*)(?:\s+([a-z][a-z0-9-]*))?")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
GLOBAL = {"--debug", "--json", "--help"}
#: Commands with sub-commands (`spinetrack labelstudio start --port N`).
GROUPS = {"labelstudio"}


def _snippets(text: str) -> Iterator[tuple[int, str]]:
    """(line, code) for each code-block line and each inline code span."""
    lines = text.splitlines()
    in_block = False
    paragraph: list[str] = []
    start = 0

    def spans() -> list[tuple[int, str]]:
        return [(start, m.group(1)) for m in SPAN.finditer(" ".join(paragraph))]

    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            yield from spans()
            paragraph = []
            in_block = not in_block
        elif in_block:
            number = i + 1
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            yield number, line.split(" #")[0]
        elif not line.strip():
            yield from spans()
            paragraph = []
        else:
            if not paragraph:
                start = i + 1
            paragraph.append(line)
        i += 1
    yield from spans()


def documented_options() -> list[tuple[str, str, str]]:
    """(where, command, option) for every option written after a spinetrack command."""
    found = []
    for path in DOCS:
        for number, code in _snippets(path.read_text(encoding="utf-8")):
            for part in re.split(r"\s*(?:\|\||&&|;|\|)\s*", code):
                commands = [m for m in COMMAND.finditer(part) if m.group(1) != "spinetrack"]
                if not commands:
                    continue
                first = commands[0]
                name = first.group(1)
                if name in GROUPS and first.group(2):
                    name = f"{name} {first.group(2)}"
                for option in OPTION.findall(part[first.end():]):
                    found.append((f"{path.relative_to(ROOT)}:{number}", name, option))
    return found


@pytest.fixture(scope="module")
def cli_options() -> dict[str, set[str]]:
    _register()
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    out: dict[str, set[str]] = {}
    for name, cmd in commands.items():
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            out[f"{name} {sub_name}"] = _options(sub)
        out[name] = _options(cmd)
    assert {name.split()[0] for name in out if " " in name} == GROUPS, "GROUPS: commands with sub-commands"
    return out


def _options(command: object) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}  # type: ignore[attr-defined]


def test_the_docs_are_read() -> None:
    found = documented_options()
    assert len(found) > 50
    assert any(cmd == "ingest" and opt == "--dask-address" for _, cmd, opt in found)  # a code block
    assert any(cmd == "train" and opt == "--init-checkpoint" for _, cmd, opt in found)  # a wrapped span


def test_every_documented_option_exists(cli_options: dict[str, set[str]]) -> None:
    missing = [f"{where}: spinetrack {cmd} {opt}" for where, cmd, opt in documented_options()
               if cmd not in cli_options or opt not in cli_options[cmd] | GLOBAL]
    assert not missing, "options the docs name that the CLI does not have:\n" + "\n".join(missing)
