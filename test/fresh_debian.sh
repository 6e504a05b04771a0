#!/usr/bin/env bash
#
# test/fresh_debian.sh
#     The README's first hour, on a fresh Debian bookworm system: a
#     minbase chroot that has only make besides the essentials, made with
#     mmdebstrap once and kept as a tarball in
#     ${DC_CHROOT_DIR:-/var/cache/durable_cluster}/bookworm-minbase.tar,
#     unpacked anew for every run.  In it:
#
#       1. as root, "make demo" in a copy of the tree: it must install only
#          the demo's packages (from Debian's archive, nothing cached), run
#          the tutorial, and leave no PostgreSQL cluster or service behind
#          but the demo's own server; its time and download size are
#          printed;
#       2. as a normal user, in a copy of the tree of their own, pg_regress
#          through "make test" (DC_SUITES=regress), using what root's demo
#          installed: the user's build must be recognised as the installed
#          one, and the expected outputs must hold for a superuser named
#          after that user.
#
#     As root (chroot, mounts).  .ci/run runs it.  Exit status 0 only if
#     both steps passed and every check held.
#
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "fresh_debian.sh: must run as root" >&2; exit 2; }
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${DC_CHROOT_DIR:-/var/cache/durable_cluster}/bookworm-minbase.tar
me=fresh_debian.sh
say() { printf '%s: %s\n' "$me" "$*"; }
failures=0
check()
{
	local what=$1
	shift
	if "$@"; then
		say "ok:     $what"
	else
		say "FAILED: $what"
		failures=$((failures + 1))
	fi
}

if [ ! -s "$cache" ]; then
	say "making the minbase system $cache (Debian bookworm, once)"
	mkdir -p "$(dirname "$cache")"
	mmdebstrap --quiet --variant=minbase --include=make bookworm "$cache.new"
	mv "$cache.new" "$cache"
fi

root=$(mktemp -d /var/tmp/dc_fresh_debian.XXXXXX)
mounted=()
cleanup()
{
	local i
	# the demo server, if it still runs
	chroot "$root" runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl \
		-D /tmp/durable_cluster_demo/data -w -m immediate stop >/dev/null 2>&1 || true
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount "${mounted[i]}" || true
	done
	rm -rf "$root"
}
trap cleanup EXIT
tar -C "$root" -xf "$cache"
for m in proc dev dev/pts dev/shm; do
	if [ "$m" = proc ]; then mount -t proc proc "$root/proc"; else mount --bind "/$m" "$root/$m"; fi
	mounted+=("$root/$m")
done
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root() { chroot "$root" "$@"; }

# ---- 1. root: make demo ----
mkdir -p "$root/root/durable_cluster"
bash "$srcdir/test/copy_tree.sh" "$srcdir" "$root/root/durable_cluster"
say "1. as root: make demo (output in $root/demo.log while it runs)"
start=$SECONDS
# (on the port the README's demo uses, unless something here has it)
port=5499
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
	port=$((port + 1))
done
demo_rc=0
in_root env DC_DEMO_PORT="$port" bash -c 'cd /root/durable_cluster && make demo' \
	</dev/null >"$root/demo.log" 2>&1 || demo_rc=$?
demo_time=$((SECONDS - start))
check "make demo succeeded in ${demo_time} s" [ "$demo_rc" -eq 0 ]
if [ "$demo_rc" -ne 0 ]; then
	tail -n 40 "$root/demo.log"
fi
say "   $(grep -m1 -E '^Need to get' "$root/demo.log" || echo 'apt-get said nothing about its download')"
say "   $(grep -m1 -E 'newly installed' "$root/demo.log" || true)"
say "   $(grep -m1 -E 'additional disk space' "$root/demo.log" || true)"
check "it said what it installs before installing" grep -q '^install_packages.sh: installing these Debian packages' "$root/demo.log"
check "its first line is its own, not make's complaint" \
	bash -c "! head -n 1 '$root/demo.log' | grep -q 'No such file'"
check "the tutorial ran" grep -q '"result": "logged_in"' "$root/demo.log"
installed_list=$(in_root dpkg-query -W -f='${binary:Package}\n' 2>/dev/null)
for p in default-jdk-headless nodejs libipc-run-perl mmdebstrap debhelper docker-compose; do
	check "no $p (a test or CI package)" bash -c "! grep -qx '$p' <<<'$installed_list'"
done
check "no cluster but the demo's (pg_lsclusters is empty)" \
	bash -c "[ -z \"\$(chroot '$root' pg_lsclusters -h 2>/dev/null)\" ]"
check "postgresql.service is not enabled" \
	[ ! -e "$root/etc/systemd/system/multi-user.target.wants/postgresql.service" ]
check "no policy-rc.d or createcluster.d file left by the install" \
	bash -c "[ ! -e '$root/usr/sbin/policy-rc.d' ] && [ -z \"\$(ls -A '$root/etc/postgresql-common/createcluster.d' 2>/dev/null)\" ]"
# postmasters (postgres processes whose parent is not one) in this chroot
servers=$(for d in /proc/[0-9]*; do
	[ "$(cat "$d/comm" 2>/dev/null)" = postgres ] || continue
	[ "$(readlink "$d/root" 2>/dev/null)" = "$root" ] || continue
	ppid=$(awk '{print $4}' "$d/stat" 2>/dev/null) || continue
	[ "$(cat "/proc/$ppid/comm" 2>/dev/null)" = postgres ] && continue
	readlink "$d/cwd" | sed "s|^$root||"
done | sort -u | tr '\n' ' ')
check "the only PostgreSQL server running is the demo's (${servers:-none})" \
	[ "$servers" = "/tmp/durable_cluster_demo/data " ]
in_root runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl \
	-D /tmp/durable_cluster_demo/data -w -m fast stop >/dev/null

# ---- 2. a normal user: pg_regress through make test ----
in_root useradd -m newcomer
mkdir -p "$root/home/newcomer/durable_cluster"
bash "$srcdir/test/copy_tree.sh" "$srcdir" "$root/home/newcomer/durable_cluster"
in_root chown -R newcomer:newcomer /home/newcomer/durable_cluster
say "2. as a normal user: DC_SUITES=regress make test (output in $root/test.log while it runs)"
start=$SECONDS
test_rc=0
in_root runuser -u newcomer -- bash -c 'cd ~/durable_cluster && DC_SUITES=regress make test' \
	</dev/null >"$root/test.log" 2>&1 || test_rc=$?
check "make test (pg_regress) passed as a normal user in $((SECONDS - start)) s" [ "$test_rc" -eq 0 ]
check "it used root's install of the same build" grep -q 'is this build' "$root/test.log"
if [ "$test_rc" -ne 0 ]; then
	tail -n 60 "$root/test.log"
fi
check "it left nothing in /tmp" bash -c "[ -z \"\$(ls -A '$root/tmp' | grep -v '^durable_cluster_demo$')\" ]"

if [ "$failures" -ne 0 ]; then
	say "FAIL ($failures check(s) failed)"
	exit 1
fi
say "PASS (make demo ${demo_time} s)"
