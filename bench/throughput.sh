#!/usr/bin/env bash
#
# bench/throughput.sh
#     durable_cluster against what an application would write instead, in
#     one run on one throw-away server (synchronous_commit = on, the
#     extension preloaded with its default 3 nodes, the same settings for
#     every case).
#
# Contenders, for add_balance on $ENTITIES (default 100,000) entities,
# keys drawn uniformly by pgbench (-M prepared):
#
#   ext     SELECT dc.send_command(m, u, 'add_balance', '{"amount": "1.00"}')
#   alt     SELECT bench_add_balance(m, u, 1.00): the PL/pgSQL function of
#           bench/alternative.sql -- SELECT ... FOR UPDATE, validation,
#           UPDATE with revision + 1, the new state as jsonb, insert when
#           absent: the same semantics as the command
#   upsert  a blind INSERT ... ON CONFLICT DO UPDATE of the balance
#
# Cases:
#   scaling   each contender at 1, 4, 16, 64 and 128 clients
#   hot       ext and alt, 16 clients on 10 entities and on 1 entity
#   tell      dc.tell at 16 clients: commands applied per second, counted
#             from the nodes' stats (dc.node_stats), not calls returned
#   bulk      dc.send_commands with 100 add_balance commands per call,
#             against the ceiling of the plain table: 100-row
#             UPDATE ... FROM (VALUES ...) transactions (commands or rows
#             per second, 1 and 4 clients; each client works on keys of its
#             own, so that none waits for another's row locks)
#   logged    the extension at 16 clients with a command_id on every
#             command (each is looked up in and written to the command log,
#             and its entity's log is capped): once with the default
#             retention, when nothing expires during the run, and once with
#             command_log_retention = 5s, when the saga worker deletes
#             expired entries as fast as they come; then 16 clients on 10
#             entities, where the per-entity cap deletes an entry for every
#             command.  Reports the log's rows after each run.
#   reads     primary-key SELECT, dc.get_state, the get_state command
#   cold      ext and alt over $COLD_ENTITIES (default 1,000,000) entities
#
# Every case runs $ROUNDS times (default 2), the contenders of a
# comparison alternating, and the median (for 2 rounds: the mean) is
# reported: throughput, average, p50 and p99 latency (pgbench's
# per-transaction log), and the server's CPU time per transaction (the
# machine's busy time from /proc/stat over the run, less pgbench's own).  Writes bench/results/latest.md (the tables, the ratios
# against the targets, node memory per cached entity) and
# bench/results/scaling.png (gnuplot: throughput against clients).
#
# Environment: DURATION (seconds per run, default 10), ROUNDS, ENTITIES,
# COLD_ENTITIES, DC_BENCH_DIR (default /tmp/durable_cluster_tput),
# DC_BENCH_PORT (default 5497), PG_CONFIG.

set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
ENTITIES=${ENTITIES:-100000}
COLD_ENTITIES=${COLD_ENTITIES:-1000000}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v gnuplot >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null
	else
		echo "bench: gnuplot is missing (apt-get install gnuplot-nox); no plot will be drawn" >&2
	fi
fi

BENCH_MAX_CONNECTIONS=200
bench_server_start "${DC_BENCH_DIR:-/tmp/durable_cluster_tput}" "${DC_BENCH_PORT:-5497}"
DIR=$BENCH_DIR
started=$(date +%s)

"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$BENCH_PORT" -U postgres -d postgres \
	-f "$top/bench/alternative.sql"

load_entities 1 "$ENTITIES"

# script NAME KEYS QUERY: a pgbench script over keys 1..KEYS
script()
{
	printf '\\set k random(1, %s)\n%s\n' "$2" "$3" > "$DIR/$1.sql"
}
ext_query="SELECT dc.send_command('m', 'u' || :k, 'add_balance', '{\"amount\": \"1.00\"}');"
alt_query="SELECT bench_add_balance('m', 'u' || :k, 1.00);"
upsert_query="INSERT INTO bench_state AS b (mall_id, user_id, state, revision, updated_at)
VALUES ('m', 'u' || :k, jsonb_build_object('mall_id', 'm', 'user_id', 'u' || :k, 'balance', '1.00'), 1, now())
ON CONFLICT (mall_id, user_id) DO UPDATE
   SET state = b.state || jsonb_build_object('balance', to_char((b.state ->> 'balance')::numeric + 1.00, 'FM9999999999999990.00'), 'last_event_time', now()),
       revision = b.revision + 1, updated_at = now();"
script ext "$ENTITIES" "$ext_query"
script alt "$ENTITIES" "$alt_query"
script upsert "$ENTITIES" "$upsert_query"
script ext_hot10 10 "$ext_query"
script alt_hot10 10 "$alt_query"
script ext_hot1 1 "$ext_query"
script alt_hot1 1 "$alt_query"
script tell "$ENTITIES" "SELECT dc.tell('m', 'u' || :k, 'add_balance', '{\"amount\": \"1.00\"}');"
# a command_id unique to the client and a random 62-bit number
logged_query()
{
	printf '\\set r random(1, 4611686018427387904)\n\\set k random(1, %s)\n%s\n' "$1" \
		"SELECT dc.send_command('m', 'u' || :k, 'add_balance', ('{\"amount\": \"1.00\", \"command_id\": \"c' || :client_id || '-' || :r || '\"}')::jsonb);"
}
logged_query "$ENTITIES" > "$DIR/logged.sql"
logged_query 10 > "$DIR/logged_hot10.sql"
script pk "$ENTITIES" "SELECT state FROM bench_state WHERE mall_id = 'm' AND user_id = 'u' || :k;"
script get "$ENTITIES" "SELECT dc.get_state('m', 'u' || :k);"
script get_cmd "$ENTITIES" "SELECT dc.send_command('m', 'u' || :k, 'get_state');"
printf '%s\n' "UPDATE bench_state b
   SET state = b.state || jsonb_build_object('balance', to_char((b.state ->> 'balance')::numeric + 1.00, 'FM9999999999999990.00')),
       revision = b.revision + 1, updated_at = now()
  FROM (SELECT 'u' || (1 + :client_id + 4 * floor(random() * ($ENTITIES / 4)))::int AS u
          FROM generate_series(1, 100)) v
 WHERE b.mall_id = 'm' AND b.user_id = v.u;" > "$DIR/ceiling.sql"
# The array is made as a client sends it, JSON text parsed once by
# jsonb_in; building it with jsonb_build_object per element would cost the
# caller's backend more than sending the commands does.  Any command
# answered with an error fails the run (division by zero).
printf '%s\n' "SELECT 1 / (count(*) - count(sqlstate))::int / (count(*) = 100)::int
  FROM dc.send_commands((
    SELECT ('[' || string_agg(format('{\"mall_id\": \"m\", \"user_id\": \"u%s\", \"command\": \"add_balance\", \"payload\": {\"amount\": \"1.00\"}}',
                                     1 + :client_id + 4 * floor(random() * ($ENTITIES / 4))::int), ', ') || ']')::jsonb
      FROM generate_series(1, 100)));" > "$DIR/bulk.sql"

declare -A applied log_rows

# commands the nodes applied so far
node_commands() { sql "SELECT coalesce(sum(commands), 0) FROM dc.node_stats"; }

# tell_run: dc.tell at 16 clients; commands applied per second, from the
# nodes' stats, until every told command is applied
tell_run()
{
	local before after last t0 t1
	before=$(node_commands)
	t0=$(date +%s.%N)
	pgb tell tell 16
	# the calls have returned; wait until the nodes have applied them all
	last=-1
	after=$(node_commands)
	while [ "$after" != "$last" ]; do
		last=$after
		sleep 0.2
		after=$(node_commands)
	done
	t1=$(date +%s.%N)
	applied[tell]="${applied[tell]:-} $(echo "($after - $before) / ($t1 - $t0 - 0.2)" | bc -l)"
}

# logged_run NAME SCRIPT RETENTION: a logged-commands run with
# command_log_retention = RETENTION; records the log's rows after it
logged_run()
{
	sql "ALTER SYSTEM SET durable_cluster.command_log_retention = '$3'" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
	pgb "$1" "$2" 16
	log_rows[$1]="${log_rows[$1]:-} $(sql "SELECT count(*) FROM durable_cluster.command_log")"
	sql "ALTER SYSTEM RESET durable_cluster.command_log_retention" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
}

m() { median "${tps[$1]:-}"; }
ml() { median "${lat[$1]:-}"; }
mp() { median "${p99[$1]:-}"; }
m50() { median "${p50[$1]:-}"; }
mc() { median "${cpu[$1]:-}"; }
ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc -l)"; }

# node memory: private resident memory of the node workers, before and
# after every entity has been read once through its node
node_rss_kb()
{
	local total=0 pid kb
	for pid in $(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'durable_cluster node'"); do
		kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status")
		total=$(( total + kb ))
	done
	echo "$total"
}
rss_before=$(node_rss_kb)
sql "SELECT count(*) FROM generate_series(1, $ENTITIES) g, LATERAL dc.send_command('m', 'u' || g, 'get_state')" >/dev/null
rss_after=$(node_rss_kb)
state_bytes=$(sql "SELECT round(avg(pg_column_size(state))) FROM durable_cluster.entity_state")

clients_list=(1 4 16 64 128)
echo "bench: $ROUNDS rounds, $DURATION s per run" >&2
for round in $(seq 1 "$ROUNDS"); do
	echo "round $round" >&2
	for c in "${clients_list[@]}"; do
		pgb "ext_$c" ext "$c"
		pgb "alt_$c" alt "$c"
		pgb "upsert_$c" upsert "$c"
	done
	for h in 10 1; do
		pgb "ext_hot$h" "ext_hot$h" 16
		pgb "alt_hot$h" "alt_hot$h" 16
	done
	tell_run
	for c in 1 4; do
		pgb "ceiling_$c" ceiling "$c"
		pgb "bulk_$c" bulk "$c"
	done
	logged_run ext_logged logged 1d
	logged_run ext_logged_pruned logged 5s
	logged_run ext_logged_hot10 logged_hot10 1d
	pgb pk pk 16
	pgb get get 16
	pgb get_cmd get_cmd 16
done

echo "bench: loading $COLD_ENTITIES entities for the cold case" >&2
load_entities "$(( ENTITIES + 1 ))" "$COLD_ENTITIES"
script ext_cold "$COLD_ENTITIES" "$ext_query"
script alt_cold "$COLD_ENTITIES" "$alt_query"
for round in $(seq 1 "$ROUNDS"); do
	pgb ext_cold ext_cold 16
	pgb alt_cold alt_cold 16
done

# ---- report ----
mkdir -p "$top/bench/results"
dat="$top/bench/results/scaling.dat"
{
	echo "# clients ext alt upsert (tps, median of $ROUNDS)"
	for c in "${clients_list[@]}"; do
		echo "$c $(m "ext_$c") $(m "alt_$c") $(m "upsert_$c")"
	done
} > "$dat"
if command -v gnuplot >/dev/null 2>&1; then
	gnuplot <<PLOT
set terminal pngcairo size 800,500 noenhanced
set output '$top/bench/results/scaling.png'
set title 'add_balance on $ENTITIES entities, synchronous_commit = on ($(nproc) cores)'
set xlabel 'clients'
set ylabel 'commands per second'
set logscale x 2
set key bottom right
set grid
plot '$dat' using 1:2 with linespoints title 'durable_cluster (dc.send_command)', \
     '$dat' using 1:3 with linespoints title 'PL/pgSQL read-validate-write function', \
     '$dat' using 1:4 with linespoints title 'blind UPSERT'
PLOT
fi

tell_applied=$(median "${applied[tell]}")
per_entity=$(( (rss_after - rss_before) * 1024 / ENTITIES ))
line() { printf '| %s | %.0f | %.3f | %.3f | %.2f | %.0f |\n' "$1" "$(m "$2")" "$(ml "$2")" "$(m50 "$2")" "$(mp "$2")" "$(mc "$2")"; }
verdict() { if [ "$(echo "$1 $2 $3" | awk '{ print ($2 == ">=" ? $1 >= $3 : $1 <= $3) }')" = 1 ]; then echo met; else echo "**not met**"; fi; }
target() { printf '| %s | %s | %s %s | %s |\n' "$1" "$2" "$3" "$4" "$(verdict "$2" "$3" "$4")"; }

report=$(cat <<REPORT
| case | tps | avg latency (ms) | p50 (ms) | p99 (ms) | server CPU per transaction (µs) |
|---|---|---|---|---|---|
$(for c in "${clients_list[@]}"; do n="$c clients"; [ "$c" != 1 ] || n="1 client"; line "extension, $n" "ext_$c"; line "alternative (PL/pgSQL), $n" "alt_$c"; line "blind upsert, $n" "upsert_$c"; done)
$(line "extension, 16 clients on 10 entities" ext_hot10)
$(line "alternative, 16 clients on 10 entities" alt_hot10)
$(line "extension, 16 clients on 1 entity" ext_hot1)
$(line "alternative, 16 clients on 1 entity" alt_hot1)
$(line "dc.tell calls returned, 16 clients" tell)
$(line "100-row UPDATE ceiling, 1 client (transactions)" ceiling_1)
$(line "100-row UPDATE ceiling, 4 clients (transactions)" ceiling_4)
$(line "dc.send_commands, 100 per call, 1 client (calls)" bulk_1)
$(line "dc.send_commands, 100 per call, 4 clients (calls)" bulk_4)
$(line "extension with a command_id, 16 clients, retention 1 day" ext_logged)
$(line "extension with a command_id, 16 clients, retention 5 s" ext_logged_pruned)
$(line "extension with a command_id, 16 clients on 10 entities (cap 100)" ext_logged_hot10)
$(line "primary-key SELECT, 16 clients" pk)
$(line "dc.get_state, 16 clients" get)
$(line "get_state command, 16 clients" get_cmd)
$(line "cold ($COLD_ENTITIES entities): extension, 16 clients" ext_cold)
$(line "cold ($COLD_ENTITIES entities): alternative, 16 clients" alt_cold)

dc.tell at 16 clients: $(printf '%.0f' "$tell_applied") commands applied per second (counted
from dc.node_stats until the nodes had applied every told command).
100-row UPDATE ceiling: $(printf '%.0f' "$(echo "$(m ceiling_1) * 100" | bc -l)") rows per second with 1 client,
$(printf '%.0f' "$(echo "$(m ceiling_4) * 100" | bc -l)") with 4; dc.send_commands: $(printf '%.0f' "$(echo "$(m bulk_1) * 100" | bc -l)") commands
applied per second with 1 client, $(printf '%.0f' "$(echo "$(m bulk_4) * 100" | bc -l)") with 4.

Commands with a \`command_id\` (issue 18): $(ratio "$(m ext_logged)" "$(m ext_16)")× the throughput of
commands without one at 16 clients; with the log pruned by age as fast as it fills
(retention 5 s) $(ratio "$(m ext_logged_pruned)" "$(m ext_16)")×, and the log held $(printf '%.0f' "$(median "${log_rows[ext_logged_pruned]}")")
rows at the end of that run ($(printf '%.0f' "$(echo "$(m ext_logged_pruned) * 5" | bc -l)") commands come in 5 s); on 10 hot entities, where
the per-entity cap deletes an entry for every command logged,
$(ratio "$(m ext_logged_hot10)" "$(m ext_hot10)")× the hot case without ids.

| target (issue 27) | measured | wanted | verdict |
|---|---|---|---|
$(target "1 client: extension / alternative, average latency" "$(ratio "$(ml ext_1)" "$(ml alt_1)")" "<=" 1.15)
$(target "1 client: extension / alternative, p99 latency" "$(ratio "$(mp ext_1)" "$(mp alt_1)")" "<=" 1.5)
$(target "uniform, 16 clients: extension / alternative" "$(ratio "$(m ext_16)" "$(m alt_16)")" ">=" 1.5)
$(target "uniform, 16 clients: extension / blind upsert" "$(ratio "$(m ext_16)" "$(m upsert_16)")" ">=" 1.0)
$(target "uniform, 16 clients: extension / alternative, p99 latency" "$(ratio "$(mp ext_16)" "$(mp alt_16)")" "<=" 1.0)
$(target "uniform, 64 clients: extension / alternative" "$(ratio "$(m ext_64)" "$(m alt_64)")" ">=" 2.5)
$(target "uniform, 128 clients: extension / alternative" "$(ratio "$(m ext_128)" "$(m alt_128)")" ">=" 2.5)
$(target "hot, 10 entities: extension / alternative" "$(ratio "$(m ext_hot10)" "$(m alt_hot10)")" ">=" 3.0)
$(target "hot, 1 entity: extension / alternative" "$(ratio "$(m ext_hot1)" "$(m alt_hot1)")" ">=" 10.0)
$(target "bulk, 1 client: commands / ceiling rows" "$(ratio "$(m bulk_1)" "$(m ceiling_1)")" ">=" 0.6)
$(target "bulk, 4 clients: commands / ceiling rows" "$(ratio "$(m bulk_4)" "$(m ceiling_4)")" ">=" 0.6)
$(target "reads: get_state command / primary-key SELECT" "$(ratio "$(m get_cmd)" "$(m pk)")" ">=" 0.8)
$(target "reads: dc.get_state / primary-key SELECT" "$(ratio "$(m get)" "$(m pk)")" ">=" 1.0)
$(target "cold: extension / alternative" "$(ratio "$(m ext_cold)" "$(m alt_cold)")" ">=" 1.5)
$(target "16 clients: dc.tell applied / dc.send_command (issue 13)" "$(ratio "$tell_applied" "$(m ext_16)")" ">=" 1.5)
$(target "node memory per cached entity (bytes)" "$per_entity" "<=" 1024)

CPU per transaction: the machine's busy time over each run (/proc/stat) less pgbench's own,
divided by the transactions; for the extension it includes its nodes and saga worker. At 16
clients the extension used $(printf '%.0f' "$(mc ext_16)") µs per command against the alternative's
$(printf '%.0f' "$(mc alt_16)"); at 1 client $(printf '%.0f' "$(mc ext_1)") against $(printf '%.0f' "$(mc alt_1)"). A dc.send_commands or
ceiling transaction is 100 commands or rows.

Node memory: $(( rss_before / 1024 )) MiB private resident in the 3 nodes before, $(( rss_after / 1024 )) MiB
after caching $ENTITIES entities: $per_entity bytes per cached entity, whose stored state
averages $state_bytes bytes.

Settings: synchronous_commit = on, shared_buffers = 512MB, max_connections = $BENCH_MAX_CONNECTIONS, durable_cluster.store_in_process = on,
3 nodes, pgbench -M prepared, $DURATION s per run, $ROUNDS rounds (median), keys uniform over
$ENTITIES entities ($COLD_ENTITIES for the cold case). The whole run took
$(( ( $(date +%s) - started ) / 60 )) min.
Machine: $(bench_machine).
REPORT
)
echo
echo "$report"
{
	echo "# Throughput ($(date -u +%Y-%m-%d))"
	echo
	echo "![throughput against clients](scaling.png)"
	echo
	echo "$report"
} > "$top/bench/results/latest.md"
