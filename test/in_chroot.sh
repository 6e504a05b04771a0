#!/usr/bin/env bash
#
# test/in_chroot.sh MAJOR
#     The pg_regress and TAP suites against PostgreSQL MAJOR (17 or 18) in a
#     Debian chroot: Debian's own packages of that major (trixie has 17,
#     sid 18), made with mmdebstrap and kept in
#     ${DC_CHROOT_DIR:-/var/cache/durable_cluster}/chroot-MAJOR, made again
#     when missing or incomplete.  .ci/run runs it after "make test", which
#     covers PostgreSQL 15 and, on 15 only, the client examples, the compose
#     file and the network-fault test (it needs the host's namespaces).
#
#     As root (chroot, mounts).  The tree is copied into the chroot, built
#     and installed there, and tested against a throw-away server started
#     there as the postgres user.  Exit status 0 only if both suites pass.
#     PROVE_TESTS (e.g. "test/t/003_failover.pl") limits the TAP tests.
#
set -euo pipefail

major=${1:?usage: test/in_chroot.sh MAJOR}
case "$major" in
	17) suite=trixie ;;
	18) suite=sid ;;
	*) echo "in_chroot.sh: PostgreSQL $major: only 17 and 18 run in a chroot" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "in_chroot.sh: must run as root" >&2; exit 2; }

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${DC_CHROOT_DIR:-/var/cache/durable_cluster}/chroot-$major
bindir=/usr/lib/postgresql/$major/bin
me="in_chroot.sh ($major)"
say() { printf '%s: %s\n' "$me" "$*"; }
# show_file, show_failed_tap_logs
. "$srcdir/test/failure_logs.sh"

in_root() { chroot "$root" "$@"; }

if [ ! -x "$root$bindir/pg_config" ] || ! in_root perl -MIPC::Run -e 1 2>/dev/null; then
	say "making the chroot in $root (Debian $suite)"
	rm -rf "$root"
	mkdir -p "$(dirname "$root")"
	# sid's Release file may be past its validity date where it is served
	mmdebstrap --variant=minbase --aptopt='Acquire::Check-Valid-Until "false"' \
		--include="postgresql-$major,postgresql-server-dev-$major,gcc,make,libc6-dev,libpq-dev,libipc-run-perl,perl" \
		"$suite" "$root"
fi

mounted=()
cleanup()
{
	in_root su postgres -c "$bindir/pg_ctl -D /tmp/dc-regress -w stop -m immediate" >/dev/null 2>&1 || true
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount "${mounted[i]}" || true
	done
}
trap cleanup EXIT
for m in proc dev dev/shm; do
	if [ "$m" = proc ]; then mount -t proc proc "$root/proc"; else mount --bind "/$m" "$root/$m"; fi
	mounted+=("$root/$m")
done

# the tree, without what earlier runs left in it
rm -rf "$root/src"
mkdir "$root/src"
bash "$srcdir/test/copy_tree.sh" "$srcdir" "$root/src"
# the released versions' sources, for the upgrade test
bash "$srcdir/test/export_releases.sh" "$root/src"

say "building with $(in_root "$bindir/pg_config" --version)"
in_root make -C /src -s PG_CONFIG="$bindir/pg_config"
in_root make -C /src -s install PG_CONFIG="$bindir/pg_config" >/dev/null
in_root chown -R postgres:postgres /src

# a server with the extension preloaded, on a Unix socket in /tmp only
as_postgres() { in_root su postgres -c "cd /src && LANG=C.UTF-8 $*"; }
as_postgres "rm -rf /tmp/dc-regress && $bindir/initdb -D /tmp/dc-regress -A trust >/dev/null"
as_postgres "printf '%s\n' \"shared_preload_libraries = 'durable_cluster'\" \"max_worker_processes = 32\" \
	\"listen_addresses = ''\" \"unix_socket_directories = '/tmp'\" \"port = 5439\" \
	>> /tmp/dc-regress/postgresql.conf"
as_postgres "$bindir/pg_ctl -D /tmp/dc-regress -l /tmp/dc-regress.log -w start >/dev/null"

regress_rc=0
say "running pg_regress"
as_postgres "make -s installcheck PG_CONFIG=$bindir/pg_config PGHOST=/tmp PGPORT=5439 TAP_TESTS=" 2>&1 \
	| tee "$root/tmp/pg_regress.out" | sed -u -n -e '/^\(ok\|not ok\|test \|#\)/p' -e '/tests \(passed\|failed\)/p' || regress_rc=$?
if [ "$regress_rc" -ne 0 ]; then
	cat "$root/src/regression.diffs" 2>/dev/null | head -200 || true
fi
as_postgres "$bindir/pg_ctl -D /tmp/dc-regress -w stop -m fast >/dev/null"

tap_rc=0
say "running the TAP tests"
# test/tap_run.pl's lines: each file as it starts and ends, the failures
as_postgres "make -s installcheck PG_CONFIG=$bindir/pg_config REGRESS= ${PROVE_TESTS:+PROVE_TESTS='$PROVE_TESTS'}" 2>&1 \
	| tee "$root/tmp/tap.out" | sed -u -e '/^+++ tap/d' -e '/^make/d' || tap_rc=$?
if [ "$tap_rc" -ne 0 ]; then
	(cd "$root/src" && show_failed_tap_logs "$root/tmp/tap.out" tmp_check/log)
fi

[ "$regress_rc" -eq 0 ] && say "pg_regress: PASS" || say "pg_regress: FAIL"
[ "$tap_rc" -eq 0 ] && say "TAP:        PASS" || say "TAP:        FAIL"
[ "$regress_rc" -eq 0 ] && [ "$tap_rc" -eq 0 ]
