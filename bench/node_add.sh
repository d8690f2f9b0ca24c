#!/usr/bin/env bash
# Times a node addition on a fresh dev cluster: loads RECORDS keys (default
# 20000) into a three-node `pairdb dev`, starts a fourth storage node and runs
# `pairdb node add node-4 --wait`. PAIRDB_BIN=path runs another build (for a
# before/after comparison); LISTEN picks the NATS address (default
# 127.0.0.1:4344, never the machine's own 4222).
#
#   bench/node_add.sh                 # this checkout
#   PAIRDB_BIN=/tmp/pairdb-old bench/node_add.sh 50000
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-20000}
listen=${LISTEN:-127.0.0.1:4344}
server=nats://$listen
work=$(mktemp -d)
pids=()
keep=false
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  $keep || rm -rf "$work"
}
trap cleanup EXIT
bin=${PAIRDB_BIN:-}
if [ -z "$bin" ]; then
  bin=$work/pairdb
  go build -o "$bin" ./cmd/pairdb
fi

"$bin" dev --listen "$listen" --ops-addr 127.0.0.1:0 --data "$work/dev" >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$bin" node list --server "$server" >/dev/null 2>&1 && break; sleep 0.1; done
"$bin" bench --server "$server" --load --records "$records" -w get --duration 1s \
  --idempotency=false --concurrency 32 >"$work/load.log" 2>&1

"$bin" storagenode --server "$server" --id node-4 --data "$work/node-4" --ops-addr 127.0.0.1:0 >"$work/node-4.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$bin" node list --server "$server" 2>/dev/null | grep -q node-4 && break; sleep 0.1; done
"$bin" node add node-4 --wait --server "$server" 2>&1 | tr '\r' '\n' | grep -E "completed|failed" || {
  echo "node add did not complete; logs in $work" >&2
  keep=true
  exit 1
}
