#!/usr/bin/env bash
#
# scripts/install_packages.sh
#     Installs the Debian packages that building, the demo and the test
#     suite need, if any is missing.  Used by "make demo", "make test"
#     (test/run_tests.sh) and .ci/run, so that each works on a fresh Debian
#     bookworm machine.  apt-get runs only when something is missing, so
#     re-runs are quick.  Not root and something missing: says what to
#     install, and fails.
#
#   build-essential           make, gcc
#   postgresql-15             the server the extension loads into
#   postgresql-server-dev-15  PGXS, server headers, libpq, pg_regress, and
#                             the Perl TAP modules (PostgreSQL::Test::Cluster)
#   postgresql-common         pg_virtualenv
#   libipc-run-perl           IPC::Run, needed by the TAP modules
#   docker-compose            "docker-compose config" checks docker/'s
#                             compose file (no Docker engine is needed)
#
# perl (prove), util-linux (runuser) and tar are used too, but they are
# Essential or pulled in by the above; naming them would only make apt-get
# upgrade them.

set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
packages=(
	build-essential
	"postgresql-$PG_MAJOR"
	"postgresql-server-dev-$PG_MAJOR"
	postgresql-common
	libipc-run-perl
	docker-compose
	# the network-fault test (test/netfault): namespaces, netfilter and
	# the NFQUEUE library of its packet delayer
	iproute2
	nftables
	iptables
	libnetfilter-queue-dev
	# the client examples (examples/): PgJDBC and psycopg2 from Debian
	libpostgresql-jdbc-java
	python3-psycopg2
	# PostgreSQL 17 and 18 in Debian chroots (test/in_chroot.sh)
	mmdebstrap
	# the Debian package (debian/, test/package_test.sh): dh and pg_buildext
	debhelper
	postgresql-server-dev-all
)
# Node.js and a JDK only when there is none: a machine may have its own
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
command -v java >/dev/null 2>&1 || packages+=(default-jdk-headless)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ "${#missing[@]}" -gt 0 ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install_packages.sh: missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
	exit 1
fi

echo "install_packages.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# never let dpkg ask about configuration files: there may be no terminal
apt-get install -y --no-install-recommends \
	-o Dpkg::Options::=--force-confdef \
	-o Dpkg::Options::=--force-confold \
	"${missing[@]}" </dev/null
