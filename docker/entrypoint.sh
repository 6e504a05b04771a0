#!/bin/sh
#
# docker/entrypoint.sh
#     The servers of a cluster connect to each other (nodes to the store,
#     forwarded commands to the owner's server) as the role dc_cluster, with
#     libpq, which reads passwords from ~/.pgpass.  So before handing over
#     to the image's own entrypoint, write that file for the postgres
#     account from DC_CLUSTER_PASSWORD (the same on every server of the
#     compose file; initdb/10-durable-cluster.sh gives the role that
#     password).
#
set -eu

if [ -n "${DC_CLUSTER_PASSWORD:-}" ] && [ "$(id -u)" = 0 ]; then
	pgpass=/var/lib/postgresql/.pgpass
	# in .pgpass, ':' and '\' are escaped with '\'
	escape() { printf '%s' "$1" | sed 's/[\\:]/\\&/g'; }
	umask 077
	printf '*:*:*:dc_cluster:%s\n' "$(escape "$DC_CLUSTER_PASSWORD")" > "$pgpass"
	chown postgres:postgres "$pgpass"
fi

exec docker-entrypoint.sh "$@"
