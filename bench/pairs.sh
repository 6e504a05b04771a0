#!/usr/bin/env bash
#
# bench/pairs.sh SETTING BEFORE AFTER
#     One change measured in alternating pairs: the server restarted with
#     SETTING = BEFORE, then = AFTER, $ROUNDS times (default 3), and in
#     each the extension's add_balance at 1 and at 16 clients, with the
#     PL/pgSQL alternative of bench/alternative.sql at 1 and 16 clients as
#     the control (it does not use the setting, so its spread is the
#     machine's).  Prints the medians: throughput, average and p99 latency
#     and the server's CPU per command, and the change of each.
#
#     Example: bench/pairs.sh durable_cluster.store_in_process off on
#
# Environment: DURATION (seconds per run, default 8), ROUNDS, ENTITIES
# (default 100,000), DC_BENCH_DIR (default /tmp/durable_cluster_pairs),
# DC_BENCH_PORT (default 5495), PG_CONFIG.

set -euo pipefail

[ $# -eq 3 ] || { echo "usage: bench/pairs.sh SETTING BEFORE AFTER" >&2; exit 2; }
setting=$1
values=("$2" "$3")
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
ENTITIES=${ENTITIES:-100000}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_server_start "${DC_BENCH_DIR:-/tmp/durable_cluster_pairs}" "${DC_BENCH_PORT:-5495}"
"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d postgres \
	-f "$top/bench/alternative.sql"
load_entities 1 "$ENTITIES"
printf '\\set k random(1, %s)\n%s\n' "$ENTITIES" \
	"SELECT dc.send_command('m', 'u' || :k, 'add_balance', '{\"amount\": \"1.00\"}');" \
	> "$BENCH_DIR/ext.sql"
printf '\\set k random(1, %s)\n%s\n' "$ENTITIES" \
	"SELECT bench_add_balance('m', 'u' || :k, 1.00);" > "$BENCH_DIR/alt.sql"

for round in $(seq 1 "$ROUNDS"); do
	for v in "${values[@]}"; do
		echo "round $round: $setting = $v" >&2
		sql "ALTER SYSTEM SET $setting = '$v'" >/dev/null
		as_owner "$bindir/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" -w restart >/dev/null
		wait_for "SELECT (SELECT count(*) FROM dc.members WHERE status = 'up') = 3
		             AND (SELECT count(*) FROM dc.shards s JOIN dc.members m ON m.name = s.node
		                   WHERE m.status = 'up') = 100"
		sql "CHECKPOINT" >/dev/null
		for c in 1 16; do
			pgb "ext $c $v" ext "$c"
			pgb "alt $c $v" alt "$c"
		done
	done
done

change() { echo "$1 $2" | awk '{ printf "%+.0f%%", ($2 / $1 - 1) * 100 }'; }
echo
echo "$setting: $2 -> $3, $ROUNDS alternating rounds of $DURATION s, medians ($(bench_machine))"
printf '%-8s %-7s %10s %10s %10s %10s %9s %9s %8s %8s\n' case clients "tps $2" "tps $3" \
	"avg ms $2" "avg ms $3" "p99 $2" "p99 $3" "CPU $2" "CPU $3"
for who in ext alt; do
	for c in 1 16; do
		a="$who $c $2" b="$who $c $3"
		printf '%-8s %-7s %10.0f %10.0f %10.3f %10.3f %9.2f %9.2f %8.0f %8.0f  tps %s, CPU/command %s\n' \
			"$who" "$c" "$(median "${tps[$a]}")" "$(median "${tps[$b]}")" \
			"$(median "${lat[$a]}")" "$(median "${lat[$b]}")" \
			"$(median "${p99[$a]}")" "$(median "${p99[$b]}")" \
			"$(median "${cpu[$a]}")" "$(median "${cpu[$b]}")" \
			"$(change "$(median "${tps[$a]}")" "$(median "${tps[$b]}")")" \
			"$(change "$(median "${cpu[$a]}")" "$(median "${cpu[$b]}")")"
	done
done
