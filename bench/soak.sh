#!/usr/bin/env bash
#
# bench/soak.sh  ("make soak")
#     Does memory stay flat?  A throw-away server (bench/lib.sh: 3 nodes,
#     synchronous_commit = on) runs a mixed load for SOAK_DURATION seconds
#     (default 600): commands (login, add_balance, deduct_balance,
#     get_state, some with a command_id), tells, transfers and a
#     registered command, at a modest rate (SOAK_RATE transactions per
#     second, default 300, so that the machine is not saturated), over
#     SOAK_ENTITIES entities (default 20,000).  Every SOAK_SAMPLE seconds
#     (default 30) it samples, for every node, the saga worker and every
#     node's store session (the store backends whose application_name is
#     "durable_cluster node-N"):
#
#       private memory: Private_Clean + Private_Dirty of
#                       /proc/PID/smaps_rollup, in kB;
#       for nodes also the total of their memory contexts
#                       (dc.node_stats.memory_bytes).
#
#     It also samples the rows and bytes (dc.storage) of every table of
#     the extension.  The command log and the sagas are kept for
#     SOAK_RETENTION seconds (default 120, set as command_log_retention and
#     saga_retention), so that within the run they reach the size at which
#     removal keeps up with the load.
#
#     It writes bench/results/soak.md (the samples, the slope of each
#     process from the second sample on -- the first is the warm-up --
#     fitted by least squares, in kB per hour; the tables' sizes and their
#     slopes after two retention periods) and bench/results/soak.svg
#     (private memory over time, one line per process).
#
#     Not a test: nothing passes or fails.  The TAP test 019 is the check.
#
# Environment: SOAK_DURATION, SOAK_SAMPLE, SOAK_RATE, SOAK_ENTITIES, SOAK_RETENTION,
# DC_BENCH_DIR (default /tmp/durable_cluster_soak), DC_BENCH_PORT (5496),
# PG_CONFIG.

set -euo pipefail

DURATION=${SOAK_DURATION:-600}
SAMPLE=${SOAK_SAMPLE:-30}
RATE=${SOAK_RATE:-300}
ENTITIES=${SOAK_ENTITIES:-20000}
RETENTION=${SOAK_RETENTION:-120}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_server_start "${DC_BENCH_DIR:-/tmp/durable_cluster_soak}" "${DC_BENCH_PORT:-5496}"
DIR=$BENCH_DIR
results="$top/bench/results"
mkdir -p "$results"
sql "ALTER SYSTEM SET durable_cluster.command_log_retention = '${RETENTION}s'"
sql "ALTER SYSTEM SET durable_cluster.saga_retention = '${RETENTION}s'"
sql "SELECT pg_reload_conf()" >/dev/null

# Every entity funded (so that deducts and transfers mostly go through),
# cached, and with the key the registered command adds: the run measures
# a steady state, not the caches filling.
sql "
CREATE FUNCTION soak_note(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS \$\$ SELECT state || jsonb_build_object('note', payload -> 'note') \$\$;
SELECT dc.register_command('soak_note', 'soak_note(jsonb, jsonb)');"
# (each in a transaction of its own: the nodes see committed registrations)
sql "SELECT count(dc.tell('s', 'u' || g, 'add_balance', '{\"amount\": 1000}'))
       FROM generate_series(1, $ENTITIES) g" >/dev/null
sql "SELECT count(dc.send_command('s', 'u' || g, 'soak_note', '{\"note\": 0}'))
       FROM generate_series(1, $ENTITIES) g" >/dev/null

# the mix, as pgbench scripts with weights
cat > "$DIR/cmd.sql" <<EOF
\\set u random(1, $ENTITIES)
\\set c random(1, 4)
SELECT dc.send_command('s', 'u' || :u,
       (ARRAY['login', 'add_balance', 'deduct_balance', 'get_state'])[:c],
       CASE WHEN :c IN (2, 3) THEN '{"amount": 1}'::jsonb ELSE '{}'::jsonb END);
EOF
cat > "$DIR/idem.sql" <<EOF
\\set u random(1, $ENTITIES)
\\set id random(1, 1000000000)
SELECT dc.send_command('s', 'u' || :u, 'add_balance',
       jsonb_build_object('amount', 1, 'command_id', 'soak-' || :id));
EOF
cat > "$DIR/tell.sql" <<EOF
\\set u random(1, $ENTITIES)
SELECT dc.tell('s', 'u' || :u, 'login');
EOF
cat > "$DIR/transfer.sql" <<EOF
\\set a random(1, $ENTITIES)
\\set d random(1, $(( ENTITIES - 1 )))
SELECT dc.transfer('s', 'u' || :a, 's', 'u' || ((:a - 1 + :d) % $ENTITIES + 1), 1);
EOF
cat > "$DIR/note.sql" <<EOF
\\set u random(1, $ENTITIES)
\\set n random(1, 100)
SELECT dc.send_command('s', 'u' || :u, 'soak_note', jsonb_build_object('note', :n));
EOF
[ "$(id -u)" -ne 0 ] || chown postgres "$DIR"/*.sql

echo "soak: $DURATION s at $RATE tx/s over $ENTITIES entities, a sample every $SAMPLE s" >&2
as_owner "$bindir/pgbench" -n -h "$DIR" -p "$BENCH_PORT" -U postgres -c 4 -j 2 -R "$RATE" \
	-T "$DURATION" -f "$DIR/cmd.sql@50" -f "$DIR/idem.sql@10" -f "$DIR/tell.sql@20" \
	-f "$DIR/transfer.sql@10" -f "$DIR/note.sql@10" postgres \
	>"$DIR/pgbench.out" 2>&1 &
bench_load_pid=$!

# process label and pid, one a line
processes()
{
	sql "SELECT backend_type || coalesce(' ' || nullif(nullif(application_name, ''), backend_type), '') || '|' || pid
	       FROM pg_stat_activity
	      WHERE backend_type LIKE 'durable_cluster %'
	     UNION ALL
	     SELECT 'store session of ' || substr(application_name, 17) || '|' || pid
	       FROM pg_stat_activity
	      WHERE application_name LIKE 'durable\\_cluster node-%'
	        AND backend_type = 'client backend'
	     ORDER BY 1"
}

private_kb()
{
	awk '/^Private_(Clean|Dirty):/ { kb += $2 } END { print kb + 0 }' "/proc/$1/smaps_rollup"
}

samples="$DIR/samples.tsv"
tables="$DIR/tables.tsv"
: > "$samples"
: > "$tables"
start=$(date +%s)
while :; do
	t=$(( $(date +%s) - start ))
	# rows counted, not estimated: the run is small enough
	while IFS='|' read -r table bytes; do
		printf '%s\t%s\t%s\t%s\n' "$t" "$table" \
			"$(sql "SELECT count(*) FROM durable_cluster.$table")" "$bytes" >> "$tables"
	done < <(sql "SELECT table_name || '|' || total_bytes FROM dc.storage ORDER BY 1")
	contexts=$(sql "SELECT string_agg(node || '=' || memory_bytes, ' ') FROM dc.node_stats")
	while IFS='|' read -r label pid; do
		[ -n "$pid" ] || continue
		bytes=-
		case $label in
			"durable_cluster node "*)
				n=${label#durable_cluster node }
				bytes=$(tr ' ' '\n' <<<"$contexts" | awk -F= -v n="$n" '$1 == n { print $2 }')
				;;
		esac
		printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$label" "$pid" "$(private_kb "$pid")" "${bytes:--}" >> "$samples"
	done < <(processes)
	[ "$t" -lt "$DURATION" ] || break
	sleep "$SAMPLE"
done
wait "$bench_load_pid" || true
bench_load_pid=
# a client that aborted would have left the load lighter than it says
if grep -q 'aborted' "$DIR/pgbench.out"; then
	cat "$DIR/pgbench.out" >&2
	echo "soak: a pgbench client aborted; the load was not what was asked for" >&2
	exit 1
fi
tps=$(awk '/^tps/ { print $3 }' "$DIR/pgbench.out")

# slope of private memory (kB/h) and of contexts (bytes/h) per process,
# least squares over the samples after the first
slopes=$(awk -F'\t' '
	{ key = $2; if (!(key in first)) { first[key] = $1; next } }
	{ n[key]++; sx[key] += $1; sy[key] += $4; sxx[key] += $1 * $1; sxy[key] += $1 * $4;
	  if ($5 != "-") { cy[key] += $5; cxy[key] += $1 * $5; hasc[key] = 1 }
	  last[key] = $4 }
	END {
		for (k in n) {
			d = n[k] * sxx[k] - sx[k] * sx[k];
			s = d > 0 ? (n[k] * sxy[k] - sx[k] * sy[k]) / d * 3600 : 0;
			c = (hasc[k] && d > 0) ? sprintf("%.0f", (n[k] * cxy[k] - sx[k] * cy[k]) / d * 3600) : "-";
			printf "| %s | %d | %.0f | %s |\n", k, last[k], s, c;
		}
	}' "$samples" | sort)

# per table: rows and kB at the end of the load, kB at the start of the
# second half of the run (and at least two retention periods in, when
# removal has caught up), and the slope of bytes (kB/h) over the samples
# between the two, the load still running
fit_from=$(( DURATION / 2 > 2 * RETENTION ? DURATION / 2 : 2 * RETENTION ))
table_slopes=$(awk -F'\t' -v from="$fit_from" -v to="$DURATION" '
	$1 >= from && $1 <= to {
		if (!($2 in kb0)) kb0[$2] = $4 / 1024;
		rows[$2] = $3; kb[$2] = $4 / 1024;
		n[$2]++; sx[$2] += $1; sy[$2] += $4; sxx[$2] += $1 * $1; sxy[$2] += $1 * $4 }
	END {
		for (k in rows) {
			d = n[k] * sxx[k] - sx[k] * sx[k];
			s = d > 0 ? sprintf("%.0f", (n[k] * sxy[k] - sx[k] * sy[k]) / d * 3600 / 1024) : "-";
			printf "| %s | %d | %.0f | %.0f | %s |\n", k, rows[k], kb0[k], kb[k], s;
		}
	}' "$tables" | sort)

cat > "$results/soak.md" <<EOF
# Soak run ($(date -u +%Y-%m-%d))

\`make soak\` (bench/soak.sh): $DURATION s of a mixed load at $RATE transactions/s
requested ($tps achieved) over $ENTITIES entities -- commands (login, add, deduct,
get_state), commands with a command_id, tells, transfers and a registered command --
sampled every $SAMPLE s.  Slopes are least-squares fits from the second sample on (the
first is the warm-up).  Private memory is Private_Clean + Private_Dirty of
/proc/PID/smaps_rollup; contexts are the node's memory contexts (dc.node_stats).

| process | private memory at the end (kB) | slope (kB/h) | contexts slope (bytes/h) |
|---|---|---|---|
$slopes

![private memory over time](soak.svg)

## Tables

The command log and the sagas are kept for $RETENTION s here (command_log_retention,
saga_retention); the table below covers the samples from $fit_from s (the second half of
the run, and at least two retention periods in, once removal has caught up with the
load) to the end of the load.

| table | rows at the end | kB at $fit_from s | kB at the end | slope (kB/h) |
|---|---|---|---|---|
$table_slopes

Machine: $(bench_machine).

## Samples (s, process, pid, private kB, context bytes)

\`\`\`
$(cat "$samples")
\`\`\`

## Table samples (s, table, rows, bytes)

\`\`\`
$(cat "$tables")
\`\`\`
EOF

# the plot: private memory over time, one polyline per process
awk -F'\t' -v dur="$DURATION" '
	{ t[NR] = $1; k[NR] = $2; v[NR] = $4; if (!($2 in seen)) { seen[$2] = ++nk; name[nk] = $2 }
	  if (min == "" || $4 < min) min = $4; if ($4 > max) max = $4 }
	END {
		w = 760; h = 400; l = 70; b = 40; top = 20;
		if (max == min) max = min + 1;
		lo = min - (max - min) * 0.1; hi = max + (max - min) * 0.1;
		printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", w + 260, h + b + top;
		printf "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", l, top, w - l, h - top;
		printf "<text x=\"%d\" y=\"%d\">%d kB</text><text x=\"%d\" y=\"%d\">%d kB</text>\n", 2, top + 10, hi, 2, h, lo;
		printf "<text x=\"%d\" y=\"%d\">0 s</text><text x=\"%d\" y=\"%d\">%d s</text>\n", l, h + 15, w - 40, h + 15, dur;
		split("#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f #bcbd22 #17becf", col, " ");
		for (j = 1; j <= nk; j++) {
			pts = "";
			for (i = 1; i <= NR; i++) if (k[i] == name[j]) {
				x = l + (w - l) * t[i] / (dur > 0 ? dur : 1);
				y = h - (h - top) * (v[i] - lo) / (hi - lo);
				pts = pts sprintf("%.1f,%.1f ", x, y);
			}
			c = col[(j - 1) % 10 + 1];
			printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"%s\"/>\n", c, pts;
			printf "<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n", w + 10, top + 14 * j, c, name[j];
		}
		print "</svg>";
	}' "$samples" > "$results/soak.svg"

echo "soak: wrote bench/results/soak.md and bench/results/soak.svg" >&2
sed -n '/^| process/,/^$/p' "$results/soak.md" >&2
