#!/usr/bin/env bash
#
# examples/run.sh
#     Run the client examples -- Node.js (node-postgres), Java (PgJDBC) and
#     Python (psycopg2) -- against a running server with durable_cluster
#     preloaded.  "make test" runs this against its throw-away server; by
#     hand:
#
#         PGHOST=localhost PGPORT=5432 PGUSER=postgres examples/run.sh
#
#     It first runs examples/setup.sql as PGUSER (a superuser: it creates
#     the extension if needed and the role example_app, a dc_client with a
#     password), then each tutorial as example_app over TCP, the way an
#     application connects.  Each tutorial asserts what it prints.
#
#     Needs Node.js with node-postgres: Debian's (node-pg) where Node.js is
#     Debian's own; with another Node.js, which cannot load Debian's
#     modules, "npm ci" installs the version in package-lock.json (its
#     cache inside examples/node/, nothing shared); the example is skipped,
#     saying why, when neither works.  A JDK (java) with
#     /usr/share/java/postgresql.jar (libpostgresql-jdbc-java), and
#     /usr/bin/python3 with psycopg2 (python3-psycopg2).
#     scripts/install_packages.sh test installs them.
#
#     Exit status 0 only if all three passed.
#
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export EXAMPLE_USER=${EXAMPLE_USER:-example_app}
export EXAMPLE_PASSWORD=${EXAMPLE_PASSWORD:-example-app-password}
export PGHOST=${PGHOST:-localhost}
export PGDATABASE=${PGDATABASE:-postgres}

psql -X -q -v ON_ERROR_STOP=1 -v example_password="$EXAMPLE_PASSWORD" \
	-f "$here/setup.sql" || { echo "examples: setup failed"; exit 1; }

# the examples log in as example_app, not as PGUSER
app_env=(env -u PGUSER -u PGPASSWORD)

failed=()
run()
{
	local name=$1
	shift
	echo "---- $name ----"
	if "${app_env[@]}" "$@"; then
		echo "examples: $name PASS"
	else
		echo "examples: $name FAIL"
		failed+=("$name")
	fi
}

# node-postgres: Debian's if this Node.js loads it, else from npm
node_pg()
{
	(cd "$here/node" && node -e 'require("pg")') >/dev/null 2>&1 && return 0
	command -v npm >/dev/null 2>&1 || return 1
	(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error \
		--cache "$here/node/.npm-cache" >/dev/null)
}
if node_pg; then
	run node bash -c "cd '$here/node' && node tutorial.js"
elif command -v npm >/dev/null 2>&1 && ! npm ping >/dev/null 2>&1; then
	echo "examples: node SKIPPED (this Node.js cannot load Debian's node-pg, and the npm registry is unreachable)"
else
	echo "examples: node FAIL (no node-postgres: neither Debian's node-pg nor 'npm ci' worked)"
	failed+=(node)
fi
run java java -cp /usr/share/java/postgresql.jar "$here/java/Tutorial.java"
run python /usr/bin/python3 "$here/python/tutorial.py"

if [ "${#failed[@]}" -gt 0 ]; then
	echo "examples: FAILED: ${failed[*]}"
	exit 1
fi
echo "examples: all passed"
