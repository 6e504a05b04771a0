# bench/lib.sh -- sourced by the benchmark scripts: a throw-away server.
#
# bench_initdb_start DIR PORT EXTRA_CONF
#                               initdb and start a server (see below)
# bench_server_start DIR PORT   initdb and start a server in DIR, listening
#                               only on a Unix socket in DIR, with the
#                               extension preloaded (3 nodes) and
#                               synchronous_commit = on, and the settings
#                               of BENCH_EXTRA_CONF; stops it on exit.
# sql QUERY                     run QUERY there, unaligned, tuples only
# wait_for QUERY                poll (every 20 ms, at most 120 s) until QUERY
#                               returns t
# bench_machine                 one line describing the machine
# load_entities FROM TO         entities uFROM..uTO of mall m, stored for the
#                               extension and for bench/alternative.sql
# pgb NAME SCRIPT CLIENTS       one pgbench run of DIR/SCRIPT.sql, its
#                               figures added to the samples of NAME
# median SAMPLES                the median of space-separated samples

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir)
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

as_owner()
{
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# bench_initdb_start DIR PORT EXTRA_CONF: initdb in DIR/data (an existing
# DIR must be empty and the postgres user's) and start it, listening on a
# Unix socket in DIR only, with the extension preloaded,
# synchronous_commit = on and EXTRA_CONF; log in DIR/server.log
bench_initdb_start()
{
	as_owner "$bindir/initdb" -D "$1/data" -U postgres -A trust >/dev/null
	cat >> "$1/data/postgresql.conf" <<CONF
port = $2
listen_addresses = ''
unix_socket_directories = '$1'
shared_preload_libraries = 'durable_cluster'
max_worker_processes = 32
synchronous_commit = on
$3
CONF
	as_owner "$bindir/pg_ctl" -D "$1/data" -l "$1/server.log" -w start >/dev/null
}

bench_server_start()
{
	BENCH_DIR=$1
	BENCH_PORT=$2
	make -C "$top" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
	if [ -f "$BENCH_DIR/data/postmaster.pid" ]; then
		as_owner "$bindir/pg_ctl" -D "$BENCH_DIR/data" stop -m immediate -w >/dev/null 2>&1 || true
	fi
	rm -rf "$BENCH_DIR"
	mkdir -p "$BENCH_DIR"
	[ "$(id -u)" -ne 0 ] || chown postgres "$BENCH_DIR"
	bench_initdb_start "$BENCH_DIR" "$BENCH_PORT" "max_connections = ${BENCH_MAX_CONNECTIONS:-100}
shared_buffers = 512MB
${BENCH_EXTRA_CONF:-}"
	trap bench_server_stop EXIT
	sql "CREATE EXTENSION durable_cluster"
	wait_for "SELECT (SELECT count(*) FROM dc.members WHERE status = 'up') = 3
	             AND (SELECT count(*) FROM dc.shards s JOIN dc.members m ON m.name = s.node
	                   WHERE m.status = 'up') = 100"
}

bench_server_stop()
{
	[ -z "${bench_load_pid:-}" ] || kill "$bench_load_pid" 2>/dev/null || true
	as_owner "$bindir/pg_ctl" -D "$BENCH_DIR/data" stop -m fast -w >/dev/null 2>&1 || true
}

sql()
{
	"$bindir/psql" -X -qAt -v ON_ERROR_STOP=1 -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d postgres -c "$1"
}

wait_for()
{
	local deadline=$(( $(date +%s) + 120 ))
	until [ "$(sql "$1")" = t ]; do
		[ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for: $1" >&2; exit 1; }
		sleep 0.02
	done
}

bench_machine()
{
	echo "$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $("$bindir/postgres" --version)"
}

declare -A tps lat p50 p99 cpu

clk_tck=$(getconf CLK_TCK)
# the machine's busy time so far, in clock ticks (/proc/stat: user, nice,
# system, irq, softirq, steal of all CPUs)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# pgb NAME SCRIPT CLIENTS: one pgbench run; appends to the samples of NAME
# its tps, average, p50 and p99 latency (ms) and the server's CPU time per
# transaction (microseconds): the machine's busy time over the run less
# pgbench's own (the shell's "times" of its children), over the
# transactions
pgb()
{
	local name=$1 file=$2 clients=$3 out t a p50v p99v b0 b1 n client c
	rm -f "$BENCH_DIR"/pgb_log*
	b0=$(busy_ticks)
	out=$(cd "$BENCH_DIR" && "$bindir/pgbench" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -n -M prepared \
		-c "$clients" -j "$(( clients < 4 ? clients : 4 ))" -T "$DURATION" \
		-l --log-prefix=pgb_log -f "$BENCH_DIR/$file.sql" postgres 2>&1; times)
	b1=$(busy_ticks)
	if echo "$out" | grep -q 'aborted\|failed transactions: [1-9]'; then
		echo "$out" >&2
		echo "bench: $name had errors" >&2
		exit 1
	fi
	t=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
	a=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
	n=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
	# "times": the shell's user and system time, then its children's
	client=$(echo "$out" | tail -n 1 | awk '{ for (i = 1; i <= 2; i++) { split($i, v, /[ms]/); s += v[1] * 60 + v[2] } print s }')
	c=$(echo "($b1 - $b0) / $clk_tck - $client" | bc -l)
	c=$(echo "$c * 1000000 / $n" | bc -l)
	read -r p50v p99v < <(cat "$BENCH_DIR"/pgb_log* | awk '{ print $3 }' | sort -n |
		awk '{ v[NR] = $1 } END { i = int(NR * 0.5); if (i < 1) i = 1; j = int(NR * 0.99); if (j < 1) j = 1; printf "%.3f %.2f\n", v[i] / 1000, v[j] / 1000 }')
	tps[$name]="${tps[$name]:-} $t"
	lat[$name]="${lat[$name]:-} $a"
	p50[$name]="${p50[$name]:-} $p50v"
	p99[$name]="${p99[$name]:-} $p99v"
	cpu[$name]="${cpu[$name]:-} $c"
	printf '  %-22s %3d clients  %9.0f tps  %7.3f ms avg  %7.3f ms p50  %7.2f ms p99  %6.0f us CPU\n' \
		"$name" "$clients" "$t" "$a" "$p50v" "$p99v" "$c" >&2
}

# median of the samples (the mean of the middle two for an even count)
median()
{
	tr ' ' '\n' <<< "$1" | grep -v '^$' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Entities u1..uN of mall m, stored in both tables with the same initial
# document and revision 1, each in its right shard.
load_entities()
{
	local from=$1 to=$2
	sql "
INSERT INTO durable_cluster.entity_state (mall_id, user_id, shard_id, state, revision, updated_at)
SELECT 'm', 'u' || g, dc.shard_id('m', 'u' || g),
       jsonb_build_object('mall_id', 'm', 'user_id', 'u' || g, 'logged_in', false,
                          'login_count', 0, 'nickname', NULL, 'balance', '0.00',
                          'last_event_time', NULL), 1, now()
  FROM generate_series($from, $to) g;
INSERT INTO bench_state SELECT mall_id, user_id, state, revision, updated_at
  FROM durable_cluster.entity_state WHERE mall_id = 'm' AND user_id IN
       (SELECT 'u' || g FROM generate_series($from, $to) g)"
	sql "VACUUM ANALYZE durable_cluster.entity_state, bench_state"
	sql "CHECKPOINT"
}
