#!/usr/bin/env bash
#
# bench/throughput.sh
#     durable_cluster against plain SQL, in one run on one throw-away server.
#
# The server has synchronous_commit = on and the extension preloaded with
# its default 3 nodes; the same settings serve every case.  It loads
# $ENTITIES (default 100,000) entities, stored both in the extension's
# durable_cluster.entity_state and in a plain table bench_state of the same
# shape, then runs pgbench (-M prepared, $CLIENTS clients, default 16,
# $DURATION seconds, default 20) for each case, keys drawn uniformly:
#
#   1  write baseline: INSERT ... ON CONFLICT DO UPDATE doing what login does
#   2  dc_send_command(m, u, 'login')
#   3  read baseline: primary-key SELECT of the state
#   4  dc_get_state(m, u)
#   5  dc_send_command(m, u, 'get_state')
#   6  cases 1 and 2 with one client
#   7  cold: $COLD_ENTITIES (default 1,000,000) entities, cases 1 and 2
#
# and prints one markdown table (tps, average and p99 latency, the ratio
# extension / baseline of each pair), also written with the machine's
# description to bench/results/latest.md.  It also reports the node
# workers' memory per cached entity: their private resident memory before
# and after every entity was read once through get_state.
#
# Environment: DURATION, CLIENTS, ENTITIES, COLD_ENTITIES, DC_BENCH_DIR
# (default /tmp/durable_cluster_tput), DC_BENCH_PORT (default 5497),
# PG_CONFIG.

set -euo pipefail

DURATION=${DURATION:-20}
CLIENTS=${CLIENTS:-16}
ENTITIES=${ENTITIES:-100000}
COLD_ENTITIES=${COLD_ENTITIES:-1000000}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_server_start "${DC_BENCH_DIR:-/tmp/durable_cluster_tput}" "${DC_BENCH_PORT:-5497}"
DIR=$BENCH_DIR

# Entities u1..uN of mall m, stored in both tables with the same initial
# document and revision 1, each in its right shard.
load_entities()
{
	local from=$1 to=$2
	sql "
INSERT INTO durable_cluster.entity_state (mall_id, user_id, shard_id, state, revision, updated_at)
SELECT 'm', 'u' || g, dc_shard_id('m', 'u' || g),
       jsonb_build_object('mall_id', 'm', 'user_id', 'u' || g, 'logged_in', false,
                          'login_count', 0, 'nickname', NULL, 'balance', 0.00,
                          'last_event_time', NULL), 1, now()
  FROM generate_series($from, $to) g;
INSERT INTO bench_state SELECT mall_id, user_id, state, revision, updated_at
  FROM durable_cluster.entity_state WHERE mall_id = 'm' AND user_id IN
       (SELECT 'u' || g FROM generate_series($from, $to) g)"
	sql "VACUUM ANALYZE durable_cluster.entity_state, bench_state"
	sql "CHECKPOINT"
}

sql "CREATE TABLE bench_state (mall_id text, user_id text, state jsonb NOT NULL,
                               revision bigint NOT NULL, updated_at timestamptz NOT NULL,
                               PRIMARY KEY (mall_id, user_id))"
load_entities 1 "$ENTITIES"

write_script()
{
	local name=$1 keys=$2 query=$3
	printf '\\set k random(1, %s)\n%s\n' "$keys" "$query" > "$DIR/$name.sql"
}

# the same state change as login: logged_in, login_count + 1, event time, revision + 1
baseline_login="INSERT INTO bench_state AS b (mall_id, user_id, state, revision, updated_at)
VALUES ('m', 'u' || :k, jsonb_build_object('mall_id', 'm', 'user_id', 'u' || :k, 'logged_in', true, 'login_count', 1, 'nickname', NULL, 'balance', 0.00, 'last_event_time', now()), 1, now())
ON CONFLICT (mall_id, user_id) DO UPDATE
   SET state = b.state || jsonb_build_object('logged_in', true, 'login_count', (b.state ->> 'login_count')::bigint + 1, 'last_event_time', now()),
       revision = b.revision + 1, updated_at = now();"

results=()

# run CASE LABEL SCRIPT CLIENTS: pgbench, then tps, average and p99 latency (ms)
run()
{
	local label=$1 script=$2 clients=$3
	local out p99
	rm -f "$DIR"/pgb_log*
	out=$(cd "$DIR" && "$bindir/pgbench" -h "$DIR" -p "$BENCH_PORT" -U postgres -n -M prepared \
		-c "$clients" -j "$(( clients < 4 ? clients : 4 ))" -T "$DURATION" \
		-l --log-prefix=pgb_log -f "$DIR/$script.sql" postgres 2>&1)
	if echo "$out" | grep -q 'aborted\|failed transactions: [1-9]'; then
		echo "$out" >&2
		echo "case $label had errors" >&2
		exit 1
	fi
	p99=$(cat "$DIR"/pgb_log* | awk '{ print $3 }' | sort -n |
		awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", v[i] / 1000 }')
	results+=("$label|$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')|$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')|$p99")
	echo "  ${results[-1]}" >&2
}

write_script c1 "$ENTITIES" "$baseline_login"
write_script c2 "$ENTITIES" "SELECT dc_send_command('m', 'u' || :k, 'login');"
write_script c3 "$ENTITIES" "SELECT state FROM bench_state WHERE mall_id = 'm' AND user_id = 'u' || :k;"
write_script c4 "$ENTITIES" "SELECT dc_get_state('m', 'u' || :k);"
write_script c5 "$ENTITIES" "SELECT dc_send_command('m', 'u' || :k, 'get_state');"

# node memory: private resident memory of the node workers, before and
# after every entity has been read once through its node
node_rss_kb()
{
	local total=0 pid kb
	for pid in $(sql "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'durable_cluster node %'"); do
		kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status")
		total=$(( total + kb ))
	done
	echo "$total"
}
rss_before=$(node_rss_kb)
sql "SELECT count(*) FROM generate_series(1, $ENTITIES) g, LATERAL dc_send_command('m', 'u' || g, 'get_state')" >/dev/null
rss_after=$(node_rss_kb)
state_bytes=$(sql "SELECT round(avg(pg_column_size(state))) FROM durable_cluster.entity_state")

echo "running $DURATION s per case, $CLIENTS clients" >&2
run "1 write baseline (upsert)" c1 "$CLIENTS"
run "2 dc_send_command login" c2 "$CLIENTS"
run "3 read baseline (pk select)" c3 "$CLIENTS"
run "4 dc_get_state" c4 "$CLIENTS"
run "5 dc_send_command get_state" c5 "$CLIENTS"
run "6a write baseline, 1 client" c1 1
run "6b dc_send_command login, 1 client" c2 1

echo "loading $COLD_ENTITIES entities for the cold cases" >&2
load_entities "$(( ENTITIES + 1 ))" "$COLD_ENTITIES"
write_script c1 "$COLD_ENTITIES" "$baseline_login"
write_script c2 "$COLD_ENTITIES" "SELECT dc_send_command('m', 'u' || :k, 'login');"
run "7a cold write baseline" c1 "$CLIENTS"
run "7b cold dc_send_command login" c2 "$CLIENTS"

field() { echo "${results[$1]}" | cut -d'|' -f"$2"; }
ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc)"; }
tps_ratio() { ratio "$(field "$1" 2)" "$(field "$2" 2)"; }
row() { printf '| %s | %.0f | %s | %s |' "$(field "$1" 1)" "$(field "$1" 2)" "$(field "$1" 3)" "$(field "$1" 4)"; }

per_entity=$(( (rss_after - rss_before) * 1024 / ENTITIES ))
report=$(cat <<REPORT
| case | tps | avg latency (ms) | p99 latency (ms) |
|---|---|---|---|
$(row 0)
$(row 1)
$(row 2)
$(row 3)
$(row 4)
$(row 5)
$(row 6)
$(row 7)
$(row 8)

| ratio (extension / baseline) | value | target |
|---|---|---|
| case 2 / case 1 (writes, tps, $CLIENTS clients) | $(tps_ratio 1 0) | ≥ 2.0 |
| case 4 / case 3 (dc_get_state / select, tps) | $(tps_ratio 3 2) | ≥ 0.9 |
| case 5 / case 3 (get_state command / select, tps) | $(tps_ratio 4 2) | ≥ 0.6 |
| case 6: average latency of 6b / 6a (1 client, lower is better) | $(ratio "$(field 6 3)" "$(field 5 3)") | ≤ 1.5 |
| case 7b / 7a (cold writes, tps) | $(tps_ratio 8 7) | ≥ 1.5 |

Node memory: $(( rss_before / 1024 )) MiB private resident in the 3 nodes before, $(( rss_after / 1024 )) MiB
after caching $ENTITIES entities: $per_entity bytes per cached entity, whose stored state
averages $state_bytes bytes.

Settings: synchronous_commit = on, shared_buffers = 512MB, 3 nodes, $CLIENTS clients,
$DURATION s per case, pgbench -M prepared, keys uniform over $ENTITIES entities
($COLD_ENTITIES for case 7).
Machine: $(bench_machine).
REPORT
)
echo
echo "$report"
mkdir -p "$top/bench/results"
{ echo "# Throughput ($(date -u +%Y-%m-%d))"; echo; echo "$report"; } > "$top/bench/results/latest.md"
