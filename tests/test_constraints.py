"""constraints.txt pins every dependency exactly, within pyproject's ranges, and every
install path (bootstrap, Dockerfile) uses it: a fresh clone installs what CI tested."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"not an exact pin: {line!r}"
        pinned[canonicalize_name(name)] = version
    return pinned


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = [project["dependencies"], *project["optional-dependencies"].values()]
    requirements = [Requirement(spec) for group in groups for spec in group]
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    return requirements + [Requirement(spec) for spec in build]


def test_every_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        if name == "qanat" or (requirement.marker and not requirement.marker.evaluate()):
            continue
        assert name in pinned, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{requirement.name}=={pinned[name]} is outside pyproject's {requirement.specifier}"
        )


def test_every_install_path_uses_the_constraints() -> None:
    assert "PIP_CONSTRAINT" in (ROOT / "scripts" / "bootstrap.sh").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md constraints.txt" in dockerfile
    assert "PIP_CONSTRAINT=/src/constraints.txt" in dockerfile
    assert "constraints.txt" not in (ROOT / ".dockerignore").read_text().split("\n", 1)[1]
