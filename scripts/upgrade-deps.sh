#!/usr/bin/env bash
# Upgrades constraints.txt, the exact versions every install uses, to the newest releases
# within pyproject.toml's ranges (and of the build backend), reinstalls .venv from it and
# runs the whole suite (scripts/test.sh; extra arguments go to pytest). Commit the new
# constraints.txt only when the suite passes.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python=${QANAT_PYTHON:-python3.11}
"$python" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --upgrade pip
# hatchling is the build backend: pinned too, so an isolated build resolves the same.
"$scratch/venv/bin/python" -m pip install -q '.[all,dev]' hatchling
{
  echo "# Exact versions every install uses (scripts/bootstrap.sh, the Dockerfile, CI): pip install -c constraints.txt"
  echo "# Regenerate with scripts/upgrade-deps.sh (newest versions within pyproject's ranges, then the whole suite)."
  "$scratch/venv/bin/python" -m pip freeze --all | grep -v -i '^qanat[ =@]'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
rm -f .venv/.qanat-installed  # bootstrap reinstalls from the new constraints
exec bash scripts/test.sh "$@"
