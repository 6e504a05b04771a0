# bench/lib.sh -- sourced by the benchmark scripts: a throw-away server.
#
# bench_initdb_start DIR PORT EXTRA_CONF
#                               initdb and start a server (see below)
# bench_server_start DIR PORT   initdb and start a server in DIR, listening
#                               only on a Unix socket in DIR, with the
#                               extension preloaded (3 nodes) and
#                               synchronous_commit = on; stops it on exit.
# sql QUERY                     run QUERY there, unaligned, tuples only
# wait_for QUERY                poll (every 20 ms, at most 120 s) until QUERY
#                               returns t
# bench_machine                 one line describing the machine

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
shared_buffers = 512MB"
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
