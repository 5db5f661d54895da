#!/usr/bin/env sh
# The whole check CI runs: lint, types, tests. Needs only python3 + pip (uv is installed if missing).
set -eu
cd "$(dirname "$0")"
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
uv sync --frozen --quiet
uv run --frozen ruff check .
uv run --frozen ruff format --check .
uv run --frozen mypy
uv run --frozen pytest -q "$@"
