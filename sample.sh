#!/usr/bin/env sh
# The main job: each channel's nightly Airflow DAG, end to end, on a generated day served by
# the embedded SFTP channel simulator (the Alipay bill arrives late). Needs only python3 + pip.
set -eu
cd "$(dirname "$0")"
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
uv sync --frozen --quiet
exec uv run --frozen python -m data.demo_nightly
