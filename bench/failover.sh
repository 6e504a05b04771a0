#!/usr/bin/env bash
#
# bench/failover.sh
#     Failover and hand-off times of durable_cluster, under load.
#
# On a throw-away server (3 nodes, default heartbeat_interval = 1s and
# failure_timeout = 5s, synchronous_commit = on) with pgbench sending
# add_balance commands all along, it measures, over $TRIALS trials each:
#
#   failover  SIGSTOP node-2 -> node-2 is marked down and owns no shard
#             (then SIGCONT; it rejoins as a new incarnation)
#   hand-off  SELECT dc.remove_node('node-3') -> the call returns, with
#             node-3 left and its shards owned by the others
#             (then dc.add_node() brings a node-3 back)
#
# and prints the median and the range of each, the number of commands the
# load stored and of errors it got, and writes the same to
# bench/results/failover.md.  Times are wall clock, polled every ~20 ms.
#
# Environment: TRIALS (default 5), DC_BENCH_PORT (default 5498),
# DC_BENCH_DIR (default /tmp/durable_cluster_bench), PG_CONFIG.  The
# load runs with durable_cluster.ask_timeout = 15s, longer than a failover.

set -euo pipefail

TRIALS=${TRIALS:-5}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

now() { date +%s.%N; }

median()
{
	sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

bench_server_start "${DC_BENCH_DIR:-/tmp/durable_cluster_bench}" "${DC_BENCH_PORT:-5498}"
ready="SELECT (SELECT count(*) FROM dc.members WHERE status = 'up') = 3
          AND (SELECT count(*) FROM dc.shards s JOIN dc.members m ON m.name = s.node
                WHERE m.status = 'up') = 100
          AND (SELECT max(shard_count) - min(shard_count) FROM dc.members WHERE status = 'up') <= 1"
DIR=$BENCH_DIR
PORT=$BENCH_PORT

# the load: 8 clients, add_balance over 1,000 entities, until stopped
cat > "$DIR/load.sql" <<'LOAD'
\set u random(1, 1000)
SELECT dc.send_command('bench', 'u' || :u, 'add_balance', '{"amount": 1}');
LOAD
# ask_timeout above failure_timeout + heartbeat_interval: commands caught
# by a failover wait for the new owner instead of failing
PGOPTIONS='-c durable_cluster.ask_timeout=15s' \
"$bindir/pgbench" -h "$DIR" -p "$PORT" -U postgres -n -c 8 -j 2 -T 100000 \
	-f "$DIR/load.sql" postgres > "$DIR/pgbench.log" 2>&1 &
bench_load_pid=$!
wait_for "SELECT count(*) > 100 FROM durable_cluster.entity_state"

failover=()
handoff=()
for trial in $(seq 1 "$TRIALS"); do
	pid=$(sql "SELECT pid FROM dc.members WHERE name = 'node-2'")
	t0=$(now)
	kill -STOP "$pid"
	wait_for "SELECT status = 'down' AND shard_count = 0 FROM dc.members WHERE name = 'node-2'"
	t1=$(now)
	kill -CONT "$pid"
	failover+=("$(printf '%.3f' "$(echo "$t1 - $t0" | bc)")")
	wait_for "$ready"

	t0=$(now)
	sql "SELECT dc.remove_node('node-3')" >/dev/null
	t1=$(now)
	[ "$(sql "SELECT status = 'left' AND shard_count = 0 FROM dc.members WHERE name = 'node-3'")" = t ] ||
		{ echo "node-3 had not left when dc.remove_node returned" >&2; exit 1; }
	handoff+=("$(printf '%.3f' "$(echo "$t1 - $t0" | bc)")")
	sql "SELECT dc.add_node()" >/dev/null
	wait_for "$ready"
	echo "trial $trial: failover ${failover[-1]} s, hand-off ${handoff[-1]} s"
done

# pgbench would abort a client at its first error: count those
failed=$(grep -c 'aborted in command' "$DIR/pgbench.log" || true)
kill -TERM "$bench_load_pid" 2>/dev/null || echo "the load had stopped early: see $DIR/pgbench.log" >&2
wait "$bench_load_pid" 2>/dev/null || true
bench_load_pid=
stored=$(sql "SELECT coalesce(sum(revision), 0) FROM durable_cluster.entity_state WHERE mall_id = 'bench'")

f_med=$(printf '%s\n' "${failover[@]}" | median)
f_min=$(printf '%s\n' "${failover[@]}" | sort -g | head -1)
f_max=$(printf '%s\n' "${failover[@]}" | sort -g | tail -1)
h_med=$(printf '%s\n' "${handoff[@]}" | median)
h_min=$(printf '%s\n' "${handoff[@]}" | sort -g | head -1)
h_max=$(printf '%s\n' "${handoff[@]}" | sort -g | tail -1)

report=$(cat <<REPORT
| measure ($TRIALS trials, under load) | median | min | max |
|---|---|---|---|
| failover: SIGSTOP node-2 until it is down and owns no shard | ${f_med} s | ${f_min} s | ${f_max} s |
| hand-off: dc.remove_node('node-3') until it returns | ${h_med} s | ${h_min} s | ${h_max} s |

Load during the run (pgbench, 8 clients, add_balance over 1,000 entities, ask_timeout 15s):
$stored commands stored, $failed client errors.

Settings: heartbeat_interval = 1s, failure_timeout = 5s, 3 nodes, synchronous_commit = on.
Machine: $(bench_machine).
REPORT
)
echo
echo "$report"
mkdir -p "$top/bench/results"
{ echo "# Failover and hand-off ($(date -u +%Y-%m-%d))"; echo; echo "$report"; } > "$top/bench/results/failover.md"
