#!/bin/sh
#
# docker/entrypoint.sh
#     The servers of a cluster connect to each other (nodes to the store,
#     forwarded commands to the owner's server) as the bootstrap superuser,
#     with libpq, which reads passwords from ~/.pgpass.  So before handing
#     over to the image's own entrypoint, write that file for the postgres
#     account from POSTGRES_USER and POSTGRES_PASSWORD (the same on every
#     server of the compose file).
#
set -eu

if [ -n "${POSTGRES_PASSWORD:-}" ] && [ "$(id -u)" = 0 ]; then
	pgpass=/var/lib/postgresql/.pgpass
	# in .pgpass, ':' and '\' are escaped with '\'
	escape() { printf '%s' "$1" | sed 's/[\\:]/\\&/g'; }
	umask 077
	printf '*:*:*:%s:%s\n' "$(escape "${POSTGRES_USER:-postgres}")" \
		"$(escape "$POSTGRES_PASSWORD")" > "$pgpass"
	chown postgres:postgres "$pgpass"
fi

exec docker-entrypoint.sh "$@"
