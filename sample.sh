#!/usr/bin/env sh
# The main job on the sample data in data/sample: reconcile 2024-03-01 for both channels.
set -eu
cd "$(dirname "$0")"
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
uv sync --frozen --quiet
status=0
for ch in wechatpay alipay; do
  case $ch in
    wechatpay) bill=data/sample/wechatpay_20240301_ALL.csv ;;
    alipay) bill=data/sample/alipay_20240301.csv.zip ;;
  esac
  # exit 1 means breaks were found, which the sample has on purpose
  uv run --frozen recon run --channel "$ch" --date 2024-03-01 --bill "$bill" \
    --ledger data/sample/ledger_20240301.csv --out "out/$ch/2024-03-01" || status=$?
  [ "$status" -le 1 ] || exit "$status"
done
echo "queues and summary.json under out/<channel>/2024-03-01/; store in var/recon.duckdb"
