"""The README's commands work as written in a shell where the quick start's
``source .venv/bin/activate`` ran: every command line says ``qanat``, never
``.venv/bin/qanat``, and the activation comes before the first one."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
QANAT_COMMAND = re.compile(r"^\s*(\S+=\S+\s+)*qanat\s")


def code_lines() -> list[tuple[int, str]]:
    found, inside = [], False
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
        elif inside:
            found.append((number, line))
    return found


def test_commands_say_qanat_after_the_activation() -> None:
    lines = code_lines()
    activation = next(n for n, line in lines if line.strip() == "source .venv/bin/activate")
    commands = [n for n, line in lines if QANAT_COMMAND.match(line)]
    assert commands and min(commands) > activation
    assert not [n for n, line in lines if ".venv/bin/qanat" in line]
