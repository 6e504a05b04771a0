#!/usr/bin/env bash
#
# test/run_tests.sh
#     The test command of durable_cluster: "make test" runs this script.
#
# As root it first installs the Debian packages it needs
# (scripts/install_packages.sh).  It builds and installs the extension,
# checks that the source files depend on each other only downward
# (test/check_layers.pl) and that the reference documents every function,
# view and setting (test/check_docs.pl), then
# runs the whole suite -- the
# pg_regress tests (sql/*.sql against expected/*.out) and the TAP tests
# (test/t/*.pl) -- through "make installcheck" against a throw-away server
# made by Debian's pg_virtualenv with durable_cluster preloaded, and then the
# client examples (examples/run.sh: Node.js, Java, Python) against that
# server.  Last, it checks docker/docker-compose.yml with "docker-compose config" (no Docker
# engine needed; the TAP test 011 runs that topology without containers).
#
# Why it is shaped like this:
#
#   * initdb refuses to run as root, and both pg_virtualenv (in its non-root
#     mode) and the TAP tests' PostgreSQL::Test::Cluster run initdb.  So when
#     we are root, the suite runs as the "postgres" OS user.
#   * The postgres user may not be able to read, let alone write, the source
#     tree (think /root/... or a CI workspace), and pg_regress and prove write
#     results/ and tmp_check/ next to the sources.  So the suite runs in a
#     private copy of the tree in a temporary directory, removed on exit.
#   * "make installcheck" runs pg_regress first and stops there if it fails.
#     We run the two halves as separate "make installcheck" calls (switching
#     the other half off on the command line), so that a pg_regress failure
#     does not hide what the TAP tests would have said.
#
# Usage:  test/run_tests.sh            (normally via "make test")
#
# Environment:
#   PG_CONFIG          pg_config to build against (default: the one of
#                      PostgreSQL $PG_MAJOR, else whatever is in PATH)
#   PG_MAJOR           server major version for pg_virtualenv (default 15)
#   DC_SKIP_INSTALL=1  do not install; test what is already installed
#                      (for a non-root user after "sudo make install")
#   DC_KEEP_TMP=1      keep the temporary copy (results, TAP logs) for a
#                      post-mortem instead of removing it
#   PROVE_FLAGS        passed through to prove, e.g. PROVE_FLAGS=--verbose
#
# Internal:  test/run_tests.sh --inside-virtualenv
#     is how the script re-enters itself inside pg_virtualenv, in the
#     temporary copy; not meant to be called by hand.
#
# Exit status is 0 only if every suite passed.  The last line of output is
# "Result: PASS" or "Result: FAIL".

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

# show_file, show_server_log, show_failed_tap_logs
. "$(dirname "${BASH_SOURCE[0]}")/failure_logs.sh"

# ---------------------------------------------------------------------------
# Inner half: runs inside pg_virtualenv, as a non-root user, with the current
# directory being the temporary copy of the tree.  pg_virtualenv has set
# PGHOST/PGPORT/PGUSER/PGPASSWORD for its server.
#
# Writes the exit status of each suite to *.rc files and their output to
# *.out files in the current directory, for the outer half to summarise.
# ---------------------------------------------------------------------------
inside_virtualenv()
{
	local rc server_log

	# pg_virtualenv registers its cluster under PG_CLUSTER_CONF_ROOT, so
	# pg_lsclusters can tell us where the server writes its log.
	server_log=$(pg_lsclusters -h 2>/dev/null | awk '$2 == "regress" { print $7; exit }') || true

	# the nodes log in to this server as dc_cluster
	bash test/map_cluster_role.sh

	# ---- pg_regress ----
	say "running pg_regress (make installcheck, TAP tests switched off)"
	rc=0
	# (The Makefile points pg_regress at the existing database "postgres",
	# the one the nodes serve.)
	make installcheck TAP_TESTS= 2>&1 | tee pg_regress.out || rc=$?
	echo "$rc" > pg_regress.rc
	if [ "$rc" -ne 0 ]; then
		say "pg_regress FAILED (exit status $rc)"
		show_file regression.diffs 1000
		show_server_log "$server_log"
	fi

	# ---- TAP ----
	# The TAP tests start servers of their own with PostgreSQL::Test::Cluster;
	# the pg_virtualenv server is simply not used by them.
	say "running TAP tests (make installcheck, pg_regress switched off)"
	rc=0
	# PROVE_FLAGS must go on the make command line: Makefile.global assigns
	# it, which would override a plain environment variable.
	make installcheck REGRESS= ${PROVE_FLAGS:+PROVE_FLAGS="$PROVE_FLAGS"} 2>&1 | tee tap.out || rc=$?
	echo "$rc" > tap.rc
	if [ "$rc" -ne 0 ]; then
		say "TAP tests FAILED (exit status $rc)"
		show_failed_tap_logs tap.out tmp_check/log
	fi

	# ---- client examples ----
	# Node.js, Java and Python programs run the tutorial through their
	# drivers against this server, as an application role over TCP, so a
	# driver-level regression fails the suite (examples/run.sh).
	say "running the client examples (examples/run.sh)"
	rc=0
	bash examples/run.sh 2>&1 | tee examples.out || rc=$?
	echo "$rc" > examples.rc
	if [ "$rc" -ne 0 ]; then
		say "client examples FAILED (exit status $rc)"
		show_server_log "$server_log"
	fi

	# The verdict is in the .rc files; a non-zero exit here would only make
	# pg_virtualenv print its own copy of the server log tail.
	return 0
}

if [ "${1:-}" = "--inside-virtualenv" ]; then
	inside_virtualenv
	exit 0
fi

# ---------------------------------------------------------------------------
# Outer half.
# ---------------------------------------------------------------------------
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$srcdir"

# The TAP tests run initdb with the caller's locale (PostgreSQL::Test::Utils
# drops LC_ALL, but not LANG or the other LC_* variables), and a locale that
# was never generated on this machine makes initdb fail.  C.UTF-8 always
# exists on Debian.
for var in $(compgen -e); do
	case $var in
		LC_*) unset "$var" ;;
	esac
done
export LANG=C.UTF-8

# On a fresh machine, as root: install what the build and the suite need.
if [ "$(id -u)" -eq 0 ]; then
	bash "$srcdir/scripts/install_packages.sh" </dev/null
fi

# Fail early, naming the Debian package, rather than deep inside make.
missing=()
command -v make >/dev/null 2>&1 || missing+=("make (build-essential)")
command -v gcc >/dev/null 2>&1 || missing+=("gcc (build-essential)")
command -v "$PG_CONFIG" >/dev/null 2>&1 || missing+=("$PG_CONFIG (postgresql-server-dev-$PG_MAJOR)")
[ -x "/usr/lib/postgresql/$PG_MAJOR/bin/postgres" ] || missing+=("postgres server (postgresql-$PG_MAJOR)")
command -v pg_virtualenv >/dev/null 2>&1 || missing+=("pg_virtualenv (postgresql-common)")
command -v prove >/dev/null 2>&1 || missing+=("prove (perl)")
perl -MIPC::Run -e 1 >/dev/null 2>&1 || missing+=("IPC::Run (libipc-run-perl)")
if [ "${#missing[@]}" -gt 0 ]; then
	die "missing: ${missing[*]}; run this as root once (it installs them) or install them and retry"
fi

if [ "$(id -u)" -eq 0 ]; then
	run_as=postgres
	id postgres >/dev/null 2>&1 || die "no 'postgres' OS user to run the tests as (is postgresql-common installed?)"
else
	run_as=$(id -un)
fi

say "building with $PG_CONFIG ($("$PG_CONFIG" --version))"
make PG_CONFIG="$PG_CONFIG"

# The source files must depend on each other only downward, in layers
# (src/README.md): no cycle of calls or includes between files.
layers_rc=0
perl "$srcdir/test/check_layers.pl" "$srcdir" || layers_rc=$?
# Every function, view and setting is in the reference (docs/).
docs_rc=0
perl "$srcdir/test/check_docs.pl" "$srcdir" || docs_rc=$?

# "make install" writes into the server's lib and share directories.  Root
# can; a non-root user can if those are writable for them (a private PGXS
# install), or through password-less sudo.  Otherwise give up clearly.
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
	make install PG_CONFIG="$PG_CONFIG"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	say "installing into $pkglibdir (via sudo)"
	sudo -n make install PG_CONFIG="$PG_CONFIG"
elif installed_is_current; then
	# Someone (root) already ran "make install" of this very build.
	say "cannot write $pkglibdir, but what is installed there is this build; going on"
else
	die "cannot install into $pkglibdir as $(id -un): run this script as root, or 'sudo make install' and then DC_SKIP_INSTALL=1 $0"
fi

# The network-fault test (TAP 021) needs network namespaces and netfilter,
# that is root, while the suite runs as $run_as.  As root, start the lab
# that does those few things for it (test/netfault/netlab.pl), after
# building its packet delayer, and tell the suite its socket.  Without
# root, or where namespaces cannot be made (an unprivileged container),
# the test skips itself and says why.
netlab_pid=
start_netlab()
{
	local probe="dcnet_probe_$$" bindir

	if ! ip netns add "$probe" 2>/dev/null; then
		say "cannot create network namespaces here: the network-fault test will be skipped"
		return 0
	fi
	ip netns delete "$probe"
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
	say "network lab for the network-fault test started (pid $netlab_pid)"
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
cleanup()
{
	stop_netlab
	if [ "${DC_KEEP_TMP:-}" != 1 ]; then
		rm -rf "$workdir"
	fi
}
trap cleanup EXIT

# leftovers of earlier runs in the source tree are not copied
bash "$srcdir/test/copy_tree.sh" "$srcdir" "$workdir" || die "could not copy the source tree"
# the released versions' sources, for the upgrade test
bash "$srcdir/test/export_releases.sh" "$workdir" || die "could not export the released versions' sources"

virtualenv_cmd=(
	pg_virtualenv -v "$PG_MAJOR"
	# A fixed locale keeps pg_regress output independent of the caller's
	# environment; C.UTF-8 exists on every Debian system.
	-c "--locale=C.UTF-8"
	-o "shared_preload_libraries=durable_cluster"
	-o "max_worker_processes=32"
	bash "$workdir/test/run_tests.sh" --inside-virtualenv
)

suite_env=(PG_CONFIG="$PG_CONFIG" PROVE_FLAGS="${PROVE_FLAGS:-}")

say "running the suite as OS user '$run_as' in $workdir"
rc=0
if [ "$(id -u)" -eq 0 ]; then
	chown -R postgres:postgres "$workdir"
	start_netlab
	# runuser (util-linux) needs no password and no tty.  TMPDIR is reset
	# because root's may not be usable by postgres.
	(cd "$workdir" && runuser -u postgres -- env TMPDIR=/tmp "${suite_env[@]}" \
		"${virtualenv_cmd[@]}") || rc=$?
	stop_netlab
else
	(cd "$workdir" && env "${suite_env[@]}" "${virtualenv_cmd[@]}") || rc=$?
fi

# ---------------------------------------------------------------------------
# Summary.  pg_virtualenv talks after the suite ("Dropping cluster ..."), so
# repeat the verdicts here and end with one clear line.
# ---------------------------------------------------------------------------
# ---------------------------------------------------------------------------
# The compose file: valid as docker-compose reads it.
# ---------------------------------------------------------------------------
compose_rc=0
say "checking docker/docker-compose.yml (docker-compose config)"
docker-compose -f "$srcdir/docker/docker-compose.yml" config -q || compose_rc=$?

regress_rc=$(cat "$workdir/pg_regress.rc" 2>/dev/null || echo missing)
tap_rc=$(cat "$workdir/tap.rc" 2>/dev/null || echo missing)
examples_rc=$(cat "$workdir/examples.rc" 2>/dev/null || echo missing)

# The closing words of each tool, if it got that far.
regress_line=$(grep -E '^ *(All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests failed)' "$workdir/pg_regress.out" 2>/dev/null | tail -n 1 | sed -e 's/^ *//' -e 's/ *$//') || true
tap_files_line=$(grep -oE '^Files=[0-9]+, Tests=[0-9]+' "$workdir/tap.out" 2>/dev/null | tail -n 1) || true
tap_result_line=$(grep -E '^Result: ' "$workdir/tap.out" 2>/dev/null | tail -n 1) || true

echo
echo "================ durable_cluster test summary ================"
if [ "$rc" -ne 0 ]; then
	say "pg_virtualenv itself failed (exit status $rc)"
fi
if [ "$layers_rc" = 0 ]; then
	say "layers:     PASS (no cycle between source files)"
else
	say "layers:     FAIL (test/check_layers.pl: a cycle between source files)"
fi
if [ "$docs_rc" = 0 ]; then
	say "docs:       PASS (every function, view and setting in docs/)"
else
	say "docs:       FAIL (test/check_docs.pl: not in the reference)"
fi
if [ "$regress_rc" = 0 ]; then
	say "pg_regress: PASS ${regress_line:+($regress_line)}"
else
	say "pg_regress: FAIL (exit status $regress_rc) ${regress_line:+($regress_line)}"
fi
if [ "$tap_rc" = 0 ]; then
	say "TAP:        PASS ${tap_files_line:+($tap_files_line)}"
else
	say "TAP:        FAIL (exit status $tap_rc) ${tap_result_line:+($tap_result_line)}"
fi

if [ "$examples_rc" = 0 ]; then
	say "examples:   PASS (Node.js, Java, Python)"
else
	say "examples:   FAIL (exit status $examples_rc) $(grep -E '^examples: FAILED' "$workdir/examples.out" 2>/dev/null)"
fi
if [ "$compose_rc" = 0 ]; then
	say "compose:    PASS (docker-compose config)"
else
	say "compose:    FAIL (docker-compose config, exit status $compose_rc)"
fi

if [ "${DC_KEEP_TMP:-}" = 1 ]; then
	say "kept $workdir (results/, tmp_check/log/) as asked by DC_KEEP_TMP=1"
fi
if [ "$rc" -eq 0 ] && [ "$layers_rc" = 0 ] && [ "$docs_rc" = 0 ] && [ "$regress_rc" = 0 ] && [ "$tap_rc" = 0 ] \
	&& [ "$examples_rc" = 0 ] && [ "$compose_rc" = 0 ]; then
	echo "Result: PASS"
	exit 0
fi
if [ "${DC_KEEP_TMP:-}" != 1 ]; then
	say "rerun with DC_KEEP_TMP=1 to keep the run's results/ and tmp_check/log/"
fi
echo "Result: FAIL"
exit 1
