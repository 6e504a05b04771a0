#!/usr/bin/env bash
#
# scripts/install_packages.sh [demo|test|ci]
#     Installs the Debian packages that a job needs, if any is missing, and
#     says which before doing it.  Each job asks for its own set, so that
#     trying the demo does not install the whole CI toolchain:
#
#   demo   what "make demo" needs: the server, its headers (PGXS), a
#          compiler and make.  postgresql-server-dev-15 pulls clang and
#          LLVM in (PostgreSQL's JIT), which is most of the download.
#   test   what "make test" needs on top: Perl's IPC::Run and prove for the
#          TAP tests, namespaces and netfilter for the network-fault test,
#          the Java, Python and Node.js drivers for the client examples,
#          docker-compose to check the compose file.
#   ci     what .ci/run needs on top: mmdebstrap (PostgreSQL 17 and 18 in
#          chroots), debhelper and postgresql-server-dev-all (the Debian
#          package).
#
# apt-get runs only when something is missing, so re-runs are quick.  Not
# root and something missing: says what to install, and fails.
#
# Installing PostgreSQL's packages normally creates a cluster "main" and
# starts and enables a service for it.  Nobody asked for that server, so
# while apt-get runs, a policy-rc.d forbids starting services and a
# createcluster.d file turns the main cluster off; afterwards, if this run
# installed postgresql-common, the postgresql service is disabled (as
# "systemctl disable" would).
# A machine that already had PostgreSQL keeps its clusters and services.

set -euo pipefail

profile=${1:-ci}
PG_MAJOR=${PG_MAJOR:-15}
me=install_packages.sh

# name  why (printed before installing)
demo_packages=(
	"postgresql-$PG_MAJOR" "the server"
	"postgresql-server-dev-$PG_MAJOR" "its headers and PGXS, to build the extension"
	gcc "the compiler"
	libc6-dev "the C library's headers"
	make "make"
)
test_packages=(
	perl "prove, for the TAP tests"
	libipc-run-perl "IPC::Run, for PostgreSQL's TAP modules"
	iproute2 "network namespaces, for the network-fault test"
	nftables "netfilter, for the network-fault test"
	iptables "netfilter, for the network-fault test"
	libnetfilter-queue-dev "the network-fault test's packet delayer"
	libpostgresql-jdbc-java "PgJDBC, for the Java example"
	python3-psycopg2 "psycopg2, for the Python example"
	docker-compose "docker-compose config, to check docker/'s compose file"
)
# A JDK and Node.js only when there is none: a machine may have its own.
command -v java >/dev/null 2>&1 || test_packages+=(default-jdk-headless "a JDK, for the Java example")
if ! command -v node >/dev/null 2>&1; then
	test_packages+=(nodejs "Node.js, for the Node.js example" node-pg "node-postgres, for the Node.js example")
elif node -e 'process.exit(require("module").globalPaths.includes("/usr/share/nodejs") ? 0 : 1)' 2>/dev/null; then
	# Debian's own Node.js, which loads Debian's node modules; another
	# Node.js cannot (examples/run.sh then takes pg from npm)
	test_packages+=(node-pg "node-postgres, for the Node.js example")
fi
ci_packages=(
	mmdebstrap "PostgreSQL 17 and 18 in Debian chroots"
	debhelper "building the Debian package"
	postgresql-server-dev-all "building the Debian package (pg_buildext)"
)

case $profile in
	demo) wanted=("${demo_packages[@]}") ;;
	test) wanted=("${demo_packages[@]}" "${test_packages[@]}") ;;
	ci) wanted=("${demo_packages[@]}" "${test_packages[@]}" "${ci_packages[@]}") ;;
	*)
		echo "$me: usage: $me [demo|test|ci]" >&2
		exit 2
		;;
esac

installed()
{
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
reasons=()
for ((i = 0; i < ${#wanted[@]}; i += 2)); do
	if ! installed "${wanted[i]}"; then
		missing+=("${wanted[i]}")
		reasons+=("$(printf '  %-28s %s' "${wanted[i]}" "${wanted[i + 1]}")")
	fi
done
[ "${#missing[@]}" -gt 0 ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "$me: missing packages for '$profile': ${missing[*]}" >&2
	echo "$me: run this as root once, or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi

echo "$me: installing these Debian packages for '$profile' (and what apt-get pulls in with them):"
printf '%s\n' "${reasons[@]}"

# Starting no service, creating no cluster: undone on any exit.
fresh_postgresql=no
installed postgresql-common || fresh_postgresql=yes
policy=/usr/sbin/policy-rc.d
no_main=/etc/postgresql-common/createcluster.d/00-durable-cluster-install.conf
undo=()
restore()
{
	local f
	for f in "${undo[@]}"; do
		rm -f "$f"
	done
}
trap restore EXIT
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# written by durable_cluster %s while apt-get runs\nexit 101\n' "$me" >"$policy"
	chmod 755 "$policy"
	undo+=("$policy")
fi
if [ ! -e "$no_main" ]; then
	mkdir -p "$(dirname "$no_main")"
	echo "create_main_cluster = false" >"$no_main"
	undo+=("$no_main")
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# never let dpkg ask about configuration files: there may be no terminal
apt-get install -y --no-install-recommends \
	-o Dpkg::Options::=--force-confdef \
	-o Dpkg::Options::=--force-confold \
	"${missing[@]}" </dev/null

if [ "$fresh_postgresql" = yes ] && installed postgresql-common; then
	# what "systemctl disable" does to this unit (WantedBy=multi-user.target);
	# by hand where systemd itself is not installed (a container, a chroot)
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --quiet postgresql.service 2>/dev/null || true
	fi
	rm -f /etc/systemd/system/multi-user.target.wants/postgresql.service
	echo "$me: PostgreSQL is installed with no cluster, and its service is neither started nor enabled"
fi
