#!/usr/bin/env bash
#
# bench/forward.sh -- what forwarding a command to another server costs.
#
# Two throw-away servers on this machine: "a" holds the store and runs 3
# nodes; "b" reaches it over libpq and runs 1 node.  The entities measured
# are all owned by nodes of a, and pgbench sends them "login" commands
# through a (served there) and through b (forwarded to a), with 1 and with
# 8 clients, 10 s each.  Report: bench/results/forward.md.

set -euo pipefail

# as_owner, bindir, top, bench_initdb_start, bench_machine
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

base=${BENCH_FORWARD_DIR:-/tmp/durable_cluster_forward}
port_a=5491
port_b=5492
seconds=${BENCH_SECONDS:-10}

# sql_on SERVER PORT QUERY
sql_on()
{
	"$bindir/psql" -X -qAt -v ON_ERROR_STOP=1 -h "$base/$1" -p "$2" -U postgres -d postgres -c "$3"
}

# wait_on SERVER PORT QUERY: poll until QUERY returns t
wait_on()
{
	local deadline=$(( $(date +%s) + 120 ))
	until [ "$(sql_on "$1" "$2" "$3" 2>/dev/null)" = t ]; do
		[ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for: $3" >&2; exit 1; }
		sleep 0.05
	done
}

stop_all()
{
	for s in a b; do
		as_owner "$bindir/pg_ctl" -D "$base/$s/data" stop -m fast -w >/dev/null 2>&1 || true
	done
}

make -C "$top" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
stop_all
rm -rf "$base"
mkdir -p "$base/a" "$base/b"
[ "$(id -u)" -ne 0 ] || chown -R postgres "$base"
trap stop_all EXIT

start_server()
{
	local name=$1 port=$2 nodes=$3 extra=$4
	bench_initdb_start "$base/$name" "$port" "shared_buffers = 256MB
durable_cluster.nodes = $nodes
durable_cluster.advertise_address = '$base/$name:$port'
$extra"
	sql_on "$name" "$port" "CREATE EXTENSION durable_cluster"
}

start_server a "$port_a" 3 ""
start_server b "$port_b" 1 "durable_cluster.store = 'host=$base/a port=$port_a dbname=postgres'"
wait_on a "$port_a" "SELECT (SELECT count(*) FROM dc.members WHERE status = 'up') = 4
                       AND (SELECT count(*) FROM dc.shards s JOIN dc.members m ON m.name = s.node
                             WHERE m.status = 'up') = 100"

# 100 entities owned by a's nodes, stored and cached before measuring
sql_on a "$port_a" "CREATE TABLE bench_keys AS
SELECT row_number() OVER () AS k, u
  FROM (SELECT 'u' || g AS u FROM generate_series(1, 10000) g) x
 WHERE (SELECT m.address FROM dc.shards s JOIN dc.members m ON m.name = s.node
         WHERE s.shard_id = dc.shard_id('fw', x.u)) = '$base/a:$port_a'
 LIMIT 100"
keys=$(sql_on a "$port_a" "SELECT string_agg(u, ' ' ORDER BY k) FROM bench_keys")
sql_on a "$port_a" "SELECT count(*) FROM bench_keys, LATERAL dc.send_command('fw', u, 'login')" >/dev/null
wait_on b "$port_b" "SELECT dc.send_command('fw', 'u1', 'get_state') IS NOT NULL"

# pgbench picks one of the 100 ids by position
script="$base/forward.sql"
{
	echo "\\set k random(1, 100)"
	echo "SELECT dc.send_command('fw', (string_to_array('$keys', ' '))[:k], 'login');"
} > "$script"
chmod 644 "$script"

run()
{
	local server=$1 port=$2 clients=$3
	as_owner "$bindir/pgbench" -h "$base/$server" -p "$port" -U postgres -n -M prepared \
		-c "$clients" -j "$(( clients < 4 ? clients : 4 ))" -T "$seconds" -f "$script" postgres 2>&1 |
		awk '/latency average/ {lat = $4} /^tps/ {tps = $3} END {printf "%.0f|%.3f", tps, lat}'
}

results=()
for clients in 1 8; do
	for via in a b; do
		port=$port_a
		[ "$via" = a ] || port=$port_b
		r=$(run "$via" "$port" "$clients")
		results+=("$via|$clients|$r")
		echo "through $via, $clients client(s): $r (tps|avg ms)"
	done
done

out="$top/bench/results/forward.md"
{
	echo "# Forwarding ($(date +%Y-%m-%d))"
	echo
	echo "login commands for 100 entities owned by nodes of server a, sent through a"
	echo "(served there) or through b (forwarded to a over libpq); $seconds s per case,"
	echo "pgbench -M prepared, synchronous_commit = on."
	echo
	echo "| through | clients | tps | avg latency (ms) |"
	echo "|---|---|---|---|"
	for r in "${results[@]}"; do
		IFS='|' read -r via clients tps lat <<< "$r"
		echo "| $via$([ "$via" = b ] && echo ' (forwarded)') | $clients | $tps | $lat |"
	done
	echo
	echo "Machine: $(bench_machine)."
} > "$out"
echo "wrote $out"
