#!/usr/bin/env bash
#
# test/run_tests.sh
#     The test command of durable_cluster: "make test" runs this script.
#
# As root it first installs the Debian packages it needs
# (scripts/install_packages.sh test).  It builds and installs the extension,
# checks that the source files depend on each other only downward
# (test/check_layers.pl) and that the reference documents every function,
# view and setting (test/check_docs.pl), then runs the suites against a
# throw-away server it starts from $PG_CONFIG's installation, with
# durable_cluster preloaded:
#
#   regress   pg_regress (sql/*.sql against expected/*.out)
#   tap       the TAP tests (test/t/*.pl, which start servers of their own),
#             run by test/tap_run.pl: a line as each file starts and ends
#   examples  the Node.js, Java and Python client examples (examples/run.sh)
#   compose   docker/docker-compose.yml, checked with "docker-compose config"
#
# and ends with a summary: one line per suite, "Result: PASS" or "FAIL"
# last.  After a failure the run's directory is kept and named, and a short
# excerpt of what failed follows the summary.
#
# Why it is shaped like this:
#
#   * initdb refuses to run as root, and the TAP tests run initdb.  So when
#     we are root, the suite runs as the "postgres" OS user.
#   * That user may not be able to read, let alone write, the source tree
#     (think /root/... or a CI workspace), and pg_regress and the TAP tests
#     write results/ and tmp_check/ next to the sources.  So the suite runs
#     in a private copy of the tree in a temporary directory.
#   * The server is started from "$PG_CONFIG --bindir", not from Debian's
#     wrappers, so that a user who cannot write the system's PostgreSQL can
#     test against a copy of it they own (scripts/private_install.sh).
#   * Its database superuser is named after the OS user, as initdb does, so
#     that no test depends on a particular superuser's name.
#
# Usage:  test/run_tests.sh            (normally via "make test")
#
# Environment:
#   DC_SUITES          which suites, of "regress tap examples compose"
#                      (default: all four)
#   PG_CONFIG          pg_config of the installation to build against and
#                      test (default: PostgreSQL $PG_MAJOR's)
#   PG_MAJOR           default 15
#   DC_SKIP_INSTALL=1  do not install; test what is already installed
#   DC_KEEP_TMP=1      keep the run's directory even when everything passed
#   PROVE_FLAGS        passed to test/tap_run.pl, e.g. PROVE_FLAGS=--verbose
#   PROVE_TESTS        the TAP test files to run (default test/t/*.pl)
#   DC_TAP_FILE_TIMEOUT  seconds a TAP file may run before it is stopped
#                      and failed (default 600)
#
# Internal:  test/run_tests.sh --inside
#     is how the script re-enters itself as the test user, in the temporary
#     copy; not meant to be called by hand.

set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}

if [ -z "${PG_CONFIG:-}" ]; then
	if [ -x "/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" ]; then
		PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
	else
		PG_CONFIG=pg_config
	fi
fi
export PG_CONFIG

all_suites="regress tap examples compose"
suites=${DC_SUITES:-$all_suites}

me=$(basename "$0")

say()
{
	printf '%s: %s\n' "$me" "$*"
}

die()
{
	printf '%s: ERROR: %s\n' "$me" "$*" >&2
	exit 1
}

wants()
{
	case " $suites " in
		*" $1 "*) return 0 ;;
	esac
	return 1
}

# show_file, show_server_log, show_failed_tap_logs
. "$(dirname "${BASH_SOURCE[0]}")/failure_logs.sh"

# ---------------------------------------------------------------------------
# Inner half: runs as the test user (not root), in the temporary copy of the
# tree.  Starts the throw-away server, runs each suite, writes its exit
# status to <suite>.rc and its output to <suite>.out, stops the server.
# ---------------------------------------------------------------------------
inside()
{
	local port rc

	# (not local: the trap that stops the server runs after we return)
	bindir=$("$PG_CONFIG" --bindir)
	server=$PWD/server
	mkdir -p "$server"

	# a password for TCP logins (the examples log in over TCP, as an
	# application does); Unix-socket logins are by peer authentication
	od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$server/password"
	"$bindir/initdb" -D "$server/data" --locale=C.UTF-8 -E UTF8 \
		--auth-local=peer --auth-host=scram-sha-256 --pwfile="$server/password" \
		>"$server/initdb.log" 2>&1 || { cat "$server/initdb.log"; return 1; }

	# the first port from 54320 that nothing listens on (localhost)
	for port in $(seq 54320 54420); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
	done
	cat >>"$server/data/postgresql.conf" <<-EOC
		port = $port
		listen_addresses = 'localhost'
		unix_socket_directories = '$server'
		shared_preload_libraries = 'durable_cluster'
		max_worker_processes = 32
	EOC
	# shellcheck disable=SC2317  # (called through the trap)
	stop_server()
	{
		"$bindir/pg_ctl" -D "$server/data" -w -m fast stop >/dev/null 2>&1 || true
	}
	trap stop_server EXIT
	"$bindir/pg_ctl" -D "$server/data" -l "$server/server.log" -w -t 60 start >/dev/null ||
		{ tail -n 30 "$server/server.log"; return 1; }
	export PGHOST=localhost PGPORT=$port PGUSER=$(id -un) PGDATABASE=postgres
	PGPASSWORD=$(cat "$server/password")
	export PGPASSWORD
	say "throw-away server: PostgreSQL $("$bindir/postgres" -V | awk '{print $3}') on localhost:$port, log $server/server.log"

	# the nodes log in to this server as dc_cluster over the Unix socket
	bash test/map_cluster_role.sh

	if wants regress; then
		say "running pg_regress"
		rc=0
		# (the Makefile points pg_regress at the database "postgres", the
		# one the nodes serve)
		make -s installcheck TAP_TESTS= 2>&1 | tee regress.out | sed -u '/^make/d' || rc=$?
		echo "$rc" >regress.rc
	fi

	if wants tap; then
		# The TAP tests start servers of their own with
		# PostgreSQL::Test::Cluster; this one is not used by them.
		say "running the TAP tests (test/tap_run.pl)"
		rc=0
		# PROVE_FLAGS must go on the make command line: Makefile.global
		# assigns it, which would override a plain environment variable.
		make -s installcheck REGRESS= ${PROVE_FLAGS:+PROVE_FLAGS="$PROVE_FLAGS"} \
			${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"} 2>&1 | tee tap.out | sed -u -e '/^+++ tap/d' -e '/^make/d' || rc=$?
		echo "$rc" >tap.rc
	fi

	if wants examples; then
		# Node.js, Java and Python programs run the tutorial through their
		# drivers against this server, as an application role over TCP.
		say "running the client examples (examples/run.sh)"
		rc=0
		bash examples/run.sh 2>&1 | tee examples.out | sed -u -n '/^examples: /p' || rc=$?
		echo "$rc" >examples.rc
	fi
	cp "$server/server.log" server.log 2>/dev/null || true
	return 0
}

if [ "${1:-}" = "--inside" ]; then
	inside
	exit $?
fi

# ---------------------------------------------------------------------------
# Outer half.
# ---------------------------------------------------------------------------
for s in $suites; do
	case " $all_suites " in
		*" $s "*) ;;
		*) die "DC_SUITES: unknown suite '$s' (the suites are: $all_suites)" ;;
	esac
done

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$srcdir"

# initdb (ours and the TAP tests') takes the caller's locale
# (PostgreSQL::Test::Utils drops LC_ALL, but not LANG or the other LC_*
# variables), and a locale that was never generated on this machine makes
# it fail.  C.UTF-8 always exists on Debian.
for var in $(compgen -e); do
	case $var in
		LC_*) unset "$var" ;;
	esac
done
export LANG=C.UTF-8

# On a fresh machine, as root: install what the build and the suite need.
if [ "$(id -u)" -eq 0 ]; then
	bash "$srcdir/scripts/install_packages.sh" test </dev/null
fi

# Fail early, naming the Debian package, rather than deep inside make.
missing=()
command -v make >/dev/null 2>&1 || missing+=("make")
command -v gcc >/dev/null 2>&1 || missing+=("gcc")
command -v "$PG_CONFIG" >/dev/null 2>&1 || missing+=("postgresql-server-dev-$PG_MAJOR (no $PG_CONFIG)")
if command -v "$PG_CONFIG" >/dev/null 2>&1; then
	[ -x "$("$PG_CONFIG" --bindir)/postgres" ] || missing+=("postgresql-$PG_MAJOR (no server next to $PG_CONFIG)")
fi
if wants tap; then
	perl -MTAP::Parser -e 1 >/dev/null 2>&1 || missing+=("perl (TAP::Parser)")
	perl -MIPC::Run -e 1 >/dev/null 2>&1 || missing+=("libipc-run-perl")
fi
if wants examples; then
	command -v java >/dev/null 2>&1 || missing+=("default-jdk-headless")
	[ -f /usr/share/java/postgresql.jar ] || missing+=("libpostgresql-jdbc-java")
	/usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1 || missing+=("python3-psycopg2")
	command -v node >/dev/null 2>&1 || missing+=("nodejs node-pg")
fi
if wants compose; then
	command -v docker-compose >/dev/null 2>&1 || missing+=("docker-compose")
fi
if [ "${#missing[@]}" -gt 0 ]; then
	die "missing Debian packages: ${missing[*]}; run 'make test' as root once (it installs them: scripts/install_packages.sh test), or install them and retry"
fi

if [ "$(id -u)" -eq 0 ]; then
	run_as=postgres
	id postgres >/dev/null 2>&1 || die "no 'postgres' OS user to run the tests as (is postgresql-common installed?)"
else
	run_as=$(id -un)
fi

say "building with $PG_CONFIG ($("$PG_CONFIG" --version))"
make -s PG_CONFIG="$PG_CONFIG"

# The source files must depend on each other only downward, in layers
# (src/README.md): no cycle of calls or includes between files.
layers_rc=0
perl "$srcdir/test/check_layers.pl" "$srcdir" || layers_rc=$?
# Every function, view and setting is in the reference (docs/).
docs_rc=0
perl "$srcdir/test/check_docs.pl" "$srcdir" || docs_rc=$?

# "make install" writes into the lib and share directories of $PG_CONFIG's
# installation: root can, and so can a user who owns that installation
# (scripts/private_install.sh makes one).  A user who cannot goes on when
# what is installed there is this very build (builds are the same byte for
# byte wherever the tree is, see the Makefile), so "sudo make install" once
# is enough; password-less sudo is used if there is one.
pkglibdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
installed_is_current()
{
	local f

	cmp -s durable_cluster.so "$pkglibdir/durable_cluster.so" || return 1
	cmp -s durable_cluster.control "$sharedir/extension/durable_cluster.control" || return 1
	for f in sql/durable_cluster--*.sql; do
		cmp -s "$f" "$sharedir/extension/${f#sql/}" || return 1
	done
	return 0
}

if [ "${DC_SKIP_INSTALL:-}" = 1 ]; then
	say "DC_SKIP_INSTALL=1: testing what is installed in $pkglibdir, not installing"
elif [ "$(id -u)" -eq 0 ] || { [ -w "$pkglibdir" ] && [ -w "$sharedir/extension" ]; }; then
	say "installing into $pkglibdir"
	make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
elif installed_is_current; then
	say "what is installed in $pkglibdir is this build (installed by $(stat -c %U "$pkglibdir/durable_cluster.so")); going on"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	say "installing into $pkglibdir (via sudo)"
	sudo -n make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
else
	die "cannot install into $pkglibdir as $(id -un), and what is installed there is not this build.
  Either, as root, once: make install PG_CONFIG=$PG_CONFIG   (then 'make test' again, as yourself)
  or test against a copy of PostgreSQL you own:
      scripts/private_install.sh ~/pg$PG_MAJOR
      make test PG_CONFIG=~/pg$PG_MAJOR/lib/postgresql/$PG_MAJOR/bin/pg_config"
fi

# The network-fault test (TAP 021) needs network namespaces and netfilter,
# that is root, while the suite runs as $run_as.  As root, start the lab
# that does those few things for it (test/netfault/netlab.pl), after
# building its packet delayer, and tell the suite its socket.  Without
# root, or where the lab cannot work (an unprivileged container), the test
# skips itself with the reason (DC_NETLAB_SKIP).
netlab_pid=
# Why the lab cannot run here, or nothing: it tries, in a namespace of its
# own, exactly what the lab does (test/netfault/netlab.pl): make a
# namespace, run a command in it, a bridge and a veth pair, an nftables
# table, and the packet delayer's NFQUEUE library.
netlab_unavailable()
{
	local probe="dcnet_probe_$$" why=

	for tool in ip nft gcc; do
		command -v "$tool" >/dev/null 2>&1 || { echo "no '$tool' here"; return 0; }
	done
	ip netns add "$probe" 2>/dev/null || { echo "cannot create a network namespace ('ip netns add' failed)"; return 0; }
	if ! ip netns exec "$probe" true 2>/dev/null; then
		why="cannot run a command in a network namespace ('ip netns exec' failed)"
	elif ! ip netns exec "$probe" ip link add dcprobe0 type veth peer name dcprobe1 2>/dev/null \
		|| ! ip netns exec "$probe" ip link add dcprobebr type bridge 2>/dev/null; then
		why="cannot make a veth pair or a bridge in a network namespace"
	elif ! echo 'table inet dcprobe { }' | ip netns exec "$probe" nft -f - 2>/dev/null; then
		why="cannot make an nftables table in a network namespace"
	elif ! echo 'int main(void){return 0;}' | gcc -x c -o /dev/null - -lnetfilter_queue -lnfnetlink 2>/dev/null; then
		why="no libnetfilter-queue to build the packet delayer with"
	fi
	ip netns delete "$probe" 2>/dev/null || true
	echo "$why"
}

start_netlab()
{
	local why bindir

	why=$(netlab_unavailable)
	if [ -n "$why" ]; then
		suite_env+=(DC_NETLAB_SKIP="$why")
		return 0
	fi
	gcc -O2 -Wall -o "$workdir/test/netfault/nfq_delay" "$workdir/test/netfault/nfq_delay.c" \
		-lnetfilter_queue -lnfnetlink
	bindir=$("$PG_CONFIG" --bindir)
	perl "$workdir/test/netfault/netlab.pl" serve "$workdir/netlab.sock" "$run_as" "$workdir" \
		"$bindir" > "$workdir/netlab.log" 2>&1 &
	netlab_pid=$!
	local i
	for i in $(seq 1 50); do
		[ -S "$workdir/netlab.sock" ] && break
		sleep 0.1
	done
	[ -S "$workdir/netlab.sock" ] || die "the network lab did not start: $(cat "$workdir/netlab.log")"
	suite_env+=(DC_NETLAB_SOCKET="$workdir/netlab.sock")
}

stop_netlab()
{
	[ -n "$netlab_pid" ] || return 0
	kill "$netlab_pid" 2>/dev/null || true
	wait "$netlab_pid" 2>/dev/null || true
	# if it could not clean up after itself
	perl "$srcdir/test/netfault/netlab.pl" cleanup "dcnet$netlab_pid" || true
	netlab_pid=
}

# A private copy of the tree for the run, readable and writable by $run_as.
workdir=$(mktemp -d "${TMPDIR:-/tmp}/durable_cluster_test.XXXXXX")
# shellcheck disable=SC2317  # (called through the trap)
keep_workdir=
cleanup()
{
	stop_netlab
	if [ -z "$keep_workdir" ] && [ "${DC_KEEP_TMP:-}" != 1 ]; then
		rm -rf "$workdir"
	fi
}
trap cleanup EXIT

# leftovers of earlier runs in the source tree are not copied
bash "$srcdir/test/copy_tree.sh" "$srcdir" "$workdir" || die "could not copy the source tree"
# the released versions' sources, for the upgrade tests (TAP)
if wants tap; then
	bash "$srcdir/test/export_releases.sh" "$workdir" || die "could not export the released versions' sources"
fi

suite_env=(PG_CONFIG="$PG_CONFIG" DC_SUITES="$suites" PROVE_FLAGS="${PROVE_FLAGS:-}" PROVE_TESTS="${PROVE_TESTS:-}"
	DC_TAP_FILE_TIMEOUT="${DC_TAP_FILE_TIMEOUT:-600}")

say "running the suites ($suites) as OS user '$run_as' in $workdir"
rc=0
if [ "$(id -u)" -eq 0 ]; then
	chown -R postgres:postgres "$workdir"
	wants tap && start_netlab
	# runuser (util-linux) needs no password and no tty.  TMPDIR is reset
	# because root's may not be usable by postgres.
	(cd "$workdir" && runuser -u postgres -- env TMPDIR=/tmp "${suite_env[@]}" \
		bash test/run_tests.sh --inside) || rc=$?
	stop_netlab
else
	(cd "$workdir" && env "${suite_env[@]}" bash test/run_tests.sh --inside) || rc=$?
fi

compose_rc=skipped
if wants compose; then
	compose_rc=0
	docker-compose -f "$srcdir/docker/docker-compose.yml" config -q || compose_rc=$?
fi

# ---------------------------------------------------------------------------
# Summary first, then (on a failure) where to look and a short excerpt.
# ---------------------------------------------------------------------------
suite_rc()
{
	if ! wants "$1"; then
		echo skipped
	else
		cat "$workdir/$1.rc" 2>/dev/null || echo missing
	fi
}
regress_rc=$(suite_rc regress)
tap_rc=$(suite_rc tap)
examples_rc=$(suite_rc examples)

regress_line=$(grep -E '^ *(All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests failed)' "$workdir/regress.out" 2>/dev/null | tail -n 1 | sed -e 's/^ *//' -e 's/ *$//') || true
tap_line=$(grep -E '^Files=' "$workdir/tap.out" 2>/dev/null | tail -n 1) || true

verdict()
{
	local name=$1 code=$2 detail=$3
	case $code in
		0) say "$(printf '%-11s PASS %s' "$name:" "$detail")" ;;
		skipped) say "$(printf '%-11s not run (DC_SUITES)' "$name:")" ;;
		*) say "$(printf '%-11s FAIL (exit status %s) %s' "$name:" "$code" "$detail")" ;;
	esac
}

echo
echo "================ durable_cluster test summary ================"
[ "$rc" -eq 0 ] || say "the throw-away server or the suite runner failed (exit status $rc)"
verdict layers "$layers_rc" "(no cycle between source files)"
verdict docs "$docs_rc" "(every function, view and setting in docs/)"
verdict pg_regress "$regress_rc" "${regress_line:+($regress_line)}"
verdict TAP "$tap_rc" "${tap_line:+($tap_line)}"
verdict examples "$examples_rc" "$(grep -E '^examples: (all passed|FAILED)' "$workdir/examples.out" 2>/dev/null | tail -n 1)"
verdict compose "$compose_rc" "(docker-compose config)"

ok=yes
for code in "$rc" "$layers_rc" "$docs_rc" "$regress_rc" "$tap_rc" "$examples_rc" "$compose_rc"; do
	case $code in
		0 | skipped) ;;
		*) ok=no ;;
	esac
done

if [ "$ok" = yes ]; then
	if [ "${DC_KEEP_TMP:-}" = 1 ]; then
		say "kept $workdir as asked by DC_KEEP_TMP=1"
	else
		rm -rf "$workdir"
	fi
	echo "Result: PASS"
	exit 0
fi

# Keep everything for a post-mortem, and say where it is.
keep_workdir=1
say "everything the run wrote is kept in $workdir:"
say "  regress.out, regression.diffs, tap.out, examples.out, tmp_check/log/ (TAP logs, servers' logs), server.log (pg_regress' and the examples' server)"
if [ "$regress_rc" != 0 ] && [ "$regress_rc" != skipped ]; then
	show_file "$workdir/regression.diffs" 80
	# (the errors in its log are mostly the ones the tests provoke: only
	# a crash is worth showing here)
	if grep -qE 'PANIC|TRAP:|terminated by signal' "$workdir/server.log" 2>/dev/null; then
		echo "======== crashes in $workdir/server.log ========"
		grep -E 'PANIC|TRAP:|terminated by signal' "$workdir/server.log" | head -n 20
	fi
fi
if [ "$tap_rc" != 0 ] && [ "$tap_rc" != skipped ]; then
	show_failed_tap_logs "$workdir/tap.out" "$workdir/tmp_check/log"
fi
if [ "$examples_rc" != 0 ] && [ "$examples_rc" != skipped ]; then
	show_file "$workdir/examples.out" 60
fi
echo "Result: FAIL"
exit 1
