"""The commands the README and the CLI reference show are the commands that exist.

Each ``statewf ...`` command written in README.md (inline or in a shell block) must
parse as written, with its placeholders filled in: a documented command that fails
with "Missing option" is a newcomer's first error. Every command the ``statewf``
group offers (plugins included) must have a row in docs/reference-cli.md.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from statewf import cli as cli_module

ROOT = Path(__file__).resolve().parents[2]
INLINE = re.compile(r"`(statewf [^`]+)`")
SHELL_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)
PLACEHOLDER = re.compile(r"<[^>]+>")


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    found = [m.group(1) for m in INLINE.finditer(text)]
    for block in SHELL_BLOCK.finditer(text):
        for line in block.group(1).splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("statewf "):
                found.append(line)
    # "a|b|c" lists alternatives: check each of them.
    commands: list[str] = []
    for command in found:
        words = command.split()
        alternatives = [i for i, w in enumerate(words) if "|" in w and "'" not in w]
        if not alternatives:
            commands.append(command)
            continue
        i = alternatives[0]
        for choice in words[i].split("|"):
            commands.append(" ".join([*words[:i], choice, *words[i + 1 :]]))
    return commands


def _root() -> click.Group:
    cli_module._load_plugins()
    return cli_module.cli


def _parse(args: list[str]) -> None:
    """Parse ``statewf ARGS`` down to its last subcommand without running anything."""
    command: click.Command = _root()
    ctx = command.make_context("statewf", list(args))
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None
        assert name is not None
        command = sub
        ctx = sub.make_context(name, rest, parent=ctx)


COMMANDS = _readme_commands()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses_as_written(command: str) -> None:
    args = shlex.split(PLACEHOLDER.sub("X1", command))[1:]
    try:
        _parse(args)
    except click.UsageError as exc:
        pytest.fail(f"README's `{command}` fails as written: {exc.format_message()}")


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 10


def test_every_command_has_a_row_in_the_cli_reference() -> None:
    reference = (ROOT / "docs" / "reference-cli.md").read_text()
    missing = []
    root = _root()
    for name, command in root.commands.items():
        if f"| `{name}" not in reference:
            missing.append(name)
        module = getattr(command.callback, "__module__", "") or ""
        # statewf's own groups are documented subcommand by subcommand here; the
        # plugins' groups (runs, diagram) have their own reference pages.
        if isinstance(command, click.Group) and module == cli_module.__name__:
            missing += [
                f"{name} {sub}" for sub in command.commands if f"| `{name} {sub}" not in reference
            ]
    assert not missing, f"docs/reference-cli.md has no row for: {', '.join(missing)}"
