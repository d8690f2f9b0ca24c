#!/usr/bin/env bash
# Runs `pairdb bench` in the deployment-shaped layout of the performance
# targets: a separate nats-server process (JetStream, fsync on every write),
# one coordinator process and three storage-node processes (fsync on), each
# on its own port, in a temporary directory removed afterwards. Arguments go
# to `pairdb bench` (default: --baseline --load -w put -c quorum). After the
# run it prints every process's resident memory (RSS).
#
#   bench/layout.sh --baseline --load -w put -c quorum --concurrency 16
#   RUNS=3 bench/layout.sh --baseline -w get --load --concurrency 64
#
# With --baseline it also starts the transport baseline's responder and
# replicas as processes of their own (`pairdb bench transport`; set
# VALUE_SIZE when passing --value-size). NODE_FLAGS go to every storage
# node (e.g. --no-sync); PROFILE=dir saves CPU profiles and /metrics of the
# coordinator and node-1 from the first run. PAIRDB_BIN=path runs that
# pairdb binary instead of building this tree's.
#
# With --peers it runs bench/peers instead of `pairdb bench`: the same put
# and get workloads against PairDB, the transport baseline (in the bench
# process and in processes of its own), JetStream KV with three replicas
# on a three-server NATS cluster started for it (sync_interval: always)
# and, when `etcd` is installed (Debian: etcd-server), a three-member etcd
# cluster; RUNS repetitions (default 3), the other arguments to the driver
# (e.g. --duration 10s). It charges every process's CPU time to the stores
# it serves and reports it per operation.
#
#   bench/layout.sh --peers --duration 10s
set -euo pipefail

cd "$(dirname "$0")/.."
peers=
args=()
for a in "$@"; do
	if [ "$a" = --peers ]; then peers=1; else args+=("$a"); fi
done
work=$(mktemp -d -t pairdb-layout.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "building pairdb and nats-server into $work/bin" >&2
if [ -n "${PAIRDB_BIN:-}" ]; then
	# Another build (an older commit, say) for a before/after comparison.
	mkdir -p "$work/bin" && cp "$PAIRDB_BIN" "$work/bin/pairdb"
else
	go build -o "$work/bin/pairdb" ./cmd/pairdb
fi
go build -o "$work/bin/nats-server" github.com/nats-io/nats-server/v2
# The peers driver is a module of its own (the etcd client stays out of
# PairDB's go.mod).
if [ -n "$peers" ]; then (cd bench/peers && go build -o "$work/bin/peers" .); fi

# Free ports from the kernel, so the machine's own server (4222) and other
# runs are left alone.
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport)
cat >"$work/nats.conf" <<CONF
listen: 127.0.0.1:$port
max_payload: 8MB
jetstream { store_dir: "$work/nats", sync_interval: always }
CONF
"$work/bin/nats-server" -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
pids+=($!)
server="nats://127.0.0.1:$port"
export PAIRDB_SERVER="$server" PAIRDB_LOG_LEVEL=warn
pdb="$work/bin/pairdb"
for _ in $(seq 50); do "$pdb" tenant list >/dev/null 2>&1 && break || sleep 0.2; done

for i in 1 2 3; do
	ops[$i]=127.0.0.1:$(freeport)
	"$pdb" storagenode --id "node-$i" --data "$work/node-$i" ${NODE_FLAGS:-} --ops-addr "${ops[$i]}" >"$work/node-$i.log" 2>&1 &
	pids+=($!)
	roles[$!]="storagenode node-$i"
done
ops[0]=127.0.0.1:$(freeport)
"$pdb" coordinator --ops-addr "${ops[0]}" >"$work/coordinator.log" 2>&1 &
pids+=($!)
roles[$!]="coordinator"
roles[${pids[0]}]="nats-server"

# The nodes register themselves when they start; retry until all three have.
retry() { for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@"; }
retry "$pdb" node add node-1 node-2 node-3 --wait

# The transport baseline once more, laid out like PairDB: its responder and
# three replicas in processes of their own.
base=_pairdb_bench.layout$$
start_transport() {
	"$pdb" bench transport --role responder --base "$base" >"$work/transport.log" 2>&1 &
	pids+=($!)
	roles[$!]="transport responder"
	for i in 0 1 2; do
		"$pdb" bench transport --role replica --index "$i" --base "$base" --value-size "${VALUE_SIZE:-128}" >>"$work/transport.log" 2>&1 &
		pids+=($!)
		roles[$!]="transport replica $i"
	done
}

run_bench() {
	[ ${#args[@]} -eq 0 ] && args=(--baseline --load -w put -c quorum)
	case " ${args[*]} " in
	*" --baseline "*)
		start_transport
		args+=(--transport-base "$base")
		;;
	esac
	for run in $(seq "${RUNS:-1}"); do
		echo "=== run $run: pairdb bench ${args[*]}" >&2
		retry "$pdb" tenant create "bench-$run" --replication-factor 3
		if [ -n "${PROFILE:-}" ] && [ "$run" = 1 ]; then
			# CPU profiles of the coordinator and node-1 from second 3 of the
			# run phase on (after a --load phase of ~1 s), for `go tool pprof`.
			mkdir -p "$PROFILE"
			(sleep 4; curl -s -o "$PROFILE/coordinator.pprof" "http://${ops[0]}/debug/pprof/profile?seconds=5") &
			profilers=($!)
			(sleep 4; curl -s -o "$PROFILE/node-1.pprof" "http://${ops[1]}/debug/pprof/profile?seconds=5") &
			profilers+=($!)
		fi
		${BENCH_WRAP:-} "$pdb" bench --tenant "bench-$run" "${args[@]}" || { tail -20 "$work"/*.log >&2; exit 1; }
		if [ -n "${PROFILE:-}" ] && [ "$run" = 1 ]; then
			wait "${profilers[@]}"
			curl -s -o "$PROFILE/coordinator.metrics" "http://${ops[0]}/metrics"
			curl -s -o "$PROFILE/node-1.metrics" "http://${ops[1]}/metrics"
		fi
	done
}

if [ -n "$peers" ]; then
	. bench/peers/peers.sh
	run_peers
else
	run_bench
fi

echo "after the runs:            RSS      CPU time"
tck=$(getconf CLK_TCK)
for p in "${pids[@]}"; do
	printf '  %-22s %6d MiB %8.1f s\n' "${roles[$p]}" $(($(awk '/VmRSS/ {print $2}' "/proc/$p/status") / 1024)) \
		"$(awk -v t="$tck" '{print ($14+$15)/t}' "/proc/$p/stat")"
done
exit "${status:-0}"
