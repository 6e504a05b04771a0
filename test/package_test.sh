#!/usr/bin/env bash
#
# test/package_test.sh
#     The Debian package, built and tested as a user gets it: builds
#     postgresql-MAJOR-durable-cluster with dpkg-buildpackage and pg_buildext
#     (debian/; one package per installed major of debian/pgversions) in a
#     copy of the tree, installs the package of PG_MAJOR (default 15), checks
#     that the library and the extension scripts on the system are the
#     package's, runs pg_regress against them on a throw-away server
#     (pg_virtualenv, the library preloaded), and removes the package again.
#     As root (apt-get).  .ci/run runs it before "make test", so nothing
#     but the package has installed the extension when pg_regress runs.
#
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=package_test.sh
say() { printf '%s: %s\n' "$me" "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "$me: must run as root" >&2; exit 2; }

work=$(mktemp -d /tmp/durable_cluster_package.XXXXXX)
chmod 755 "$work"
package=postgresql-$PG_MAJOR-durable-cluster
cleanup()
{
	apt-get remove -y -q "$package" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# the tree, without what builds and test runs leave in it
mkdir "$work/src"
bash "$srcdir/test/copy_tree.sh" "$srcdir" "$work/src"

say "building the package (dpkg-buildpackage, pg_buildext)"
if ! (cd "$work/src" && dpkg-buildpackage -b -us -uc) > "$work/build.log" 2>&1; then
	tail -n 60 "$work/build.log"
	say "package build: FAIL"
	exit 1
fi
deb=$(ls "$work/${package}"_*.deb)
say "built $(basename "$deb")"

say "installing it"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" >/dev/null
libdir=$("/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" --pkglibdir)
sharedir=$("/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" --sharedir)
for f in "$libdir/durable_cluster.so" "$sharedir/extension/durable_cluster.control" \
	"$sharedir"/extension/durable_cluster--*.sql; do
	owner=$(dpkg -S "$f" 2>/dev/null | cut -d: -f1)
	if [ "$owner" != "$package" ]; then
		say "$f is not installed by $package (dpkg -S: ${owner:-nobody}): FAIL"
		exit 1
	fi
done
say "the library and the extension scripts are the package's"

say "running pg_regress against the installed files"
mkdir "$work/regress"
tar -C "$work/src" -cf - Makefile durable_cluster.control sql expected test/map_cluster_role.sh \
	| tar -C "$work/regress" -xf -
chown -R postgres:postgres "$work/regress"
rc=0
(cd "$work/regress" && runuser -u postgres -- env TMPDIR=/tmp \
	pg_virtualenv -v "$PG_MAJOR" -c "--locale=C.UTF-8" \
	-o "shared_preload_libraries=durable_cluster" -o "max_worker_processes=32" \
	bash -c "bash test/map_cluster_role.sh && make installcheck TAP_TESTS= PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config") \
	> "$work/regress.log" 2>&1 || rc=$?
grep -E '^(ok|not ok|#|test )|tests passed|failed' "$work/regress.log" || true
if [ "$rc" -ne 0 ]; then
	tail -n 40 "$work/regress.log"
	cat "$work/regress/regression.diffs" 2>/dev/null | head -200 || true
	say "pg_regress against the package: FAIL"
	exit 1
fi
say "pg_regress against the package: PASS"
