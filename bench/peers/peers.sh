# Sourced by bench/layout.sh --peers, after PairDB's processes are up: it
# starts the transport baseline's processes, a three-server NATS cluster
# for JetStream KV and, when etcd is installed, a three-member etcd
# cluster, every process in the layout's list (pids, roles) so the cleanup
# stops it and the RSS and CPU report lists it; then it runs the driver.

# start_jetstream_cluster: three nats-servers, JetStream on each, fsync on
# every write, routed to each other on loopback ports.
start_jetstream_cluster() {
	local i client=() route=() routes=""
	for i in 1 2 3; do
		client[$i]=$(freeport)
		route[$i]=$(freeport)
		routes+="\"nats-route://127.0.0.1:${route[$i]}\", "
	done
	jskv_urls=""
	for i in 1 2 3; do
		cat >"$work/js-$i.conf" <<CONF
server_name: js-$i
listen: 127.0.0.1:${client[$i]}
jetstream { store_dir: "$work/js-$i", sync_interval: always }
cluster { name: pairdb-peers, listen: 127.0.0.1:${route[$i]}, routes: [ ${routes%, } ] }
CONF
		"$work/bin/nats-server" -c "$work/js-$i.conf" >"$work/js-$i.log" 2>&1 &
		pids+=($!)
		roles[$!]="jetstream js-$i"
		peer_args+=(--proc "jskv:js-$i=$!")
		jskv_urls+="nats://127.0.0.1:${client[$i]},"
	done
	peer_args+=(--jskv-servers "${jskv_urls%,}")
}

# start_etcd_cluster: three etcd members on loopback ports (etcd fsyncs its
# WAL on every commit; there is no setting to turn that on).
start_etcd_cluster() {
	local i client=() peer=() members="" endpoints=""
	for i in 1 2 3; do
		client[$i]=$(freeport)
		peer[$i]=$(freeport)
		members+="etcd-$i=http://127.0.0.1:${peer[$i]},"
		endpoints+="http://127.0.0.1:${client[$i]},"
	done
	for i in 1 2 3; do
		etcd --name "etcd-$i" --data-dir "$work/etcd-$i" \
			--listen-client-urls "http://127.0.0.1:${client[$i]}" --advertise-client-urls "http://127.0.0.1:${client[$i]}" \
			--listen-peer-urls "http://127.0.0.1:${peer[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peer[$i]}" \
			--initial-cluster "${members%,}" --initial-cluster-state new --initial-cluster-token "pairdb-peers-$$" \
			--logger zap --log-level warn >"$work/etcd-$i.log" 2>&1 &
		pids+=($!)
		roles[$!]="etcd etcd-$i"
		peer_args+=(--proc "etcd:etcd-$i=$!")
	done
	peer_args+=(--etcd-endpoints "${endpoints%,}")
}

run_peers() {
	local r reps=${RUNS:-3}
	peer_args=(--pairdb-server "$server" --reps "$reps" --transport-base "$base")
	# PairDB's NATS server carries PairDB's and both transports' traffic.
	peer_args+=(--proc "pairdb,transport,transport-procs:nats-server=${pids[0]}")
	for p in "${pids[@]:1}"; do
		case "${roles[$p]}" in
		coordinator) peer_args+=(--proc "pairdb:coordinator=$p") ;;
		"storagenode "*) peer_args+=(--proc "pairdb:${roles[$p]#storagenode }=$p") ;;
		esac
	done
	start_transport
	for p in "${pids[@]}"; do
		case "${roles[$p]}" in
		"transport responder") peer_args+=(--proc "transport-procs:responder=$p") ;;
		"transport replica "*) peer_args+=(--proc "transport-procs:replica-${roles[$p]#transport replica }=$p") ;;
		esac
	done
	start_jetstream_cluster
	if command -v etcd >/dev/null; then
		start_etcd_cluster
	else
		echo "etcd is not installed (Debian: apt-get install etcd-server): etcd is left out" >&2
	fi
	for r in $(seq "$reps"); do
		retry "$pdb" tenant create "bench-peers-$r" --replication-factor 3
	done
	echo "=== peers: ${peer_args[*]} ${args[*]}" >&2
	# A failed store is reported, the others still summarised; the RSS and
	# CPU report follows either way, and the layout exits non-zero.
	"$work/bin/peers" "${peer_args[@]}" "${args[@]}" || { tail -20 "$work"/*.log >&2; status=1; }
}
