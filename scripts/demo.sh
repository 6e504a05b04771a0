#!/usr/bin/env bash
#
# scripts/demo.sh
#     "make demo": a throw-away PostgreSQL server running durable_cluster
#     with three nodes, and the tutorial (scripts/demo.sql) run against it.
#
# Steps:
#   1. as root, install the Debian packages that are missing, only those
#      the demo needs: the server, its headers, a compiler and make
#      (scripts/install_packages.sh demo; apt-get is skipped altogether
#      when everything is there, so re-runs are quick); the install starts
#      and enables no PostgreSQL service and creates no cluster;
#   2. build and install the extension;
#   3. create a new server in $DC_DEMO_DIR (default /tmp/durable_cluster_demo)
#      listening on port $DC_DEMO_PORT (default 5499), on localhost and on a
#      Unix socket in $DC_DEMO_DIR -- an earlier demo server there is stopped
#      and thrown away first;
#   4. CREATE EXTENSION durable_cluster, wait until the three nodes are up and
#      every shard has an owner;
#   5. run scripts/demo.sql with psql, echoing each query;
#   6. tell how to connect and how to stop the server, which is left running.
#
# initdb refuses to run as root, so as root the server belongs to, and is run
# by, the "postgres" OS user.  The database superuser is "postgres" either way.
#
# Environment:
#   DC_DEMO_PORT   port of the demo server (default 5499)
#   DC_DEMO_DIR    where it lives (default /tmp/durable_cluster_demo)
#   PG_CONFIG      pg_config to build against (default: PostgreSQL 15's)
#   DC_SKIP_INSTALL=1  do not install; use what is installed (for a
#                  non-root user after "sudo make install")

set -euo pipefail

PG_MAJOR=15
DEMO_PORT=${DC_DEMO_PORT:-5499}
DEMO_DIR=${DC_DEMO_DIR:-/tmp/durable_cluster_demo}
DATA_DIR="$DEMO_DIR/data"
LOG_FILE="$DEMO_DIR/server.log"
# Marks a directory as ours, so that we never rm -rf something else that
# DC_DEMO_DIR happens to point at.
MARKER="$DEMO_DIR/.durable_cluster_demo"
# How long to wait for the nodes to come up and own all shards.
READY_TIMEOUT=${DC_DEMO_READY_TIMEOUT:-60}

me=$(basename "$0")

say()
{
	printf '\n==> %s\n' "$*"
}

die()
{
	printf '%s: ERROR: %s\n' "$me" "$*" >&2
	exit 1
}

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$srcdir"

case $DEMO_PORT in
	'' | *[!0-9]*) die "DC_DEMO_PORT must be a port number, not '$DEMO_PORT'" ;;
esac
case $DEMO_DIR in
	/*) ;;
	*) die "DC_DEMO_DIR must be an absolute path, not '$DEMO_DIR'" ;;
esac

is_root()
{
	[ "$(id -u)" -eq 0 ]
}

# ---------------------------------------------------------------------------
# 1. Packages.
# ---------------------------------------------------------------------------
"$(dirname "${BASH_SOURCE[0]}")/install_packages.sh" demo

if [ -z "${PG_CONFIG:-}" ]; then
	PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
fi
bindir=$("$PG_CONFIG" --bindir)

# ---------------------------------------------------------------------------
# 2. Build and install.
# ---------------------------------------------------------------------------
say "building durable_cluster"
make -s PG_CONFIG="$PG_CONFIG"

pkglibdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
if [ "${DC_SKIP_INSTALL:-}" = 1 ]; then
	say "DC_SKIP_INSTALL=1: using what is installed in $pkglibdir"
elif is_root || { [ -w "$pkglibdir" ] && [ -w "$sharedir/extension" ]; }; then
	say "installing into $pkglibdir"
	make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	say "installing into $pkglibdir (via sudo)"
	sudo -n make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
elif cmp -s durable_cluster.so "$pkglibdir/durable_cluster.so"; then
	say "cannot write $pkglibdir, but the installed durable_cluster.so is this build; going on"
else
	die "cannot install into $pkglibdir as $(id -un): run this as root, or 'sudo make install' and then DC_SKIP_INSTALL=1 $0"
fi

# ---------------------------------------------------------------------------
# 3. A fresh server.
# ---------------------------------------------------------------------------

# The server's OS user, and how to run a command as it.
if is_root; then
	id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (is postgresql-common installed?)"
	server_user=postgres
	as_server_user()
	{
		runuser -u postgres -- "$@"
	}
	stop_prefix="runuser -u postgres -- "
else
	server_user=$(id -un)
	as_server_user()
	{
		"$@"
	}
	stop_prefix=""
fi

pg_ctl=("$bindir/pg_ctl" -D "$DATA_DIR")
psql=("$bindir/psql" -X -h "$DEMO_DIR" -p "$DEMO_PORT" -U postgres -d postgres)

# Stop an earlier demo server and throw its directory away.
if [ -e "$DEMO_DIR" ]; then
	if [ ! -e "$MARKER" ] && [ -n "$(ls -A "$DEMO_DIR" 2>/dev/null)" ]; then
		die "$DEMO_DIR exists and is not a durable_cluster demo directory; set DC_DEMO_DIR elsewhere"
	fi
	# Another user's demo (root's runs as postgres) is theirs to stop.
	old_owner=$(stat -c %U "$DEMO_DIR")
	if ! is_root && [ "$old_owner" != "$(id -un)" ]; then
		die "$DEMO_DIR belongs to $old_owner (another user's demo); set DC_DEMO_DIR and DC_DEMO_PORT elsewhere, or ask $old_owner to stop it"
	fi
	if [ -f "$DATA_DIR/postmaster.pid" ]; then
		say "stopping the earlier demo server in $DATA_DIR"
		# Whoever owns the old data directory must stop it.
		old_owner=$(stat -c %U "$DATA_DIR")
		if [ "$old_owner" = "$(id -un)" ]; then
			"${pg_ctl[@]}" stop -m fast -w || true
		elif is_root; then
			runuser -u "$old_owner" -- "${pg_ctl[@]}" stop -m fast -w || true
		else
			die "the demo server in $DATA_DIR belongs to $old_owner; stop it as that user first"
		fi
	fi
	rm -rf "$DEMO_DIR"
fi

# Something else listening on our port would make the new server fail to
# start, with a less obvious message; say so now.  (bash's /dev/tcp: a
# successful connect means the port is taken.)
if (exec 3<>"/dev/tcp/127.0.0.1/$DEMO_PORT") 2>/dev/null; then
	die "something already listens on localhost port $DEMO_PORT; set DC_DEMO_PORT to another port"
fi

mkdir -p "$DEMO_DIR"
touch "$MARKER"
if is_root; then
	chown -R postgres:postgres "$DEMO_DIR"
fi

say "creating a new server in $DATA_DIR (OS user $server_user, port $DEMO_PORT)"
# Trust authentication is fine for a server that listens only on localhost
# and on a socket in its own directory, and lives until the next demo.
as_server_user "$bindir/initdb" -D "$DATA_DIR" -U postgres -A trust \
	--locale=C.UTF-8 -E UTF8 >"$DEMO_DIR/initdb.log" 2>&1 ||
	{
		cat "$DEMO_DIR/initdb.log" >&2
		die "initdb failed"
	}

as_server_user tee -a "$DATA_DIR/postgresql.conf" >/dev/null <<EOF

# ---- added by scripts/demo.sh (durable_cluster demo) ----
port = $DEMO_PORT
listen_addresses = 'localhost'
unix_socket_directories = '$DEMO_DIR'
shared_preload_libraries = 'durable_cluster'
durable_cluster.nodes = 3
durable_cluster.database = 'postgres'
# three node workers plus the usual background workers
max_worker_processes = 32
EOF

say "starting the server (log: $LOG_FILE)"
if ! as_server_user "${pg_ctl[@]}" -l "$LOG_FILE" -w -t 60 start; then
	tail -n 50 "$LOG_FILE" >&2 || true
	die "the server did not start"
fi

# ---------------------------------------------------------------------------
# 4. The extension, and waiting for the cluster to form.
# ---------------------------------------------------------------------------
say "CREATE EXTENSION durable_cluster"
"${psql[@]}" -v ON_ERROR_STOP=1 -q -c 'CREATE EXTENSION durable_cluster'

say "waiting (at most ${READY_TIMEOUT}s) for 3 nodes to be up and every shard to have an owner"
ready_query="SELECT (SELECT count(*) FROM dc.members WHERE status = 'up') = 3
               AND (SELECT count(*) FROM dc.shards) > 0
               AND (SELECT count(*) FROM dc.shards WHERE node IS NULL) = 0"
deadline=$((SECONDS + READY_TIMEOUT))
until [ "$("${psql[@]}" -Atq -c "$ready_query" 2>/dev/null)" = t ]; do
	if [ "$SECONDS" -ge "$deadline" ]; then
		echo "dc.members now:" >&2
		"${psql[@]}" -c 'SELECT * FROM dc.members' >&2 || true
		echo "last lines of $LOG_FILE:" >&2
		tail -n 30 "$LOG_FILE" >&2 || true
		die "the cluster was not ready within ${READY_TIMEOUT}s"
	fi
	sleep 0.2
done
echo "ready after about $((SECONDS + READY_TIMEOUT - deadline))s"

# ---------------------------------------------------------------------------
# 5. The tutorial.
# ---------------------------------------------------------------------------
say "running scripts/demo.sql"
"${psql[@]}" -v ON_ERROR_STOP=1 -f "$srcdir/scripts/demo.sql"

# ---------------------------------------------------------------------------
# 6. How to go on.
# ---------------------------------------------------------------------------
# Printable, copy-pasteable forms of the commands.
psql_line=$(printf '%q ' "${psql[@]}")
stop_line=$(printf '%q ' "${pg_ctl[@]}" stop)

cat <<EOF

==> the demo server is still running.

Connect to it with:

    ${psql_line% }

(or over TCP: $bindir/psql -h localhost -p $DEMO_PORT -U postgres -d postgres)

Its log is $LOG_FILE.  Stop it with:

    ${stop_prefix}${stop_line% }

Running "make demo" again stops it and starts a fresh one.
EOF
