#!/bin/sh
#
# docker/initdb/10-durable-cluster.sh
#     Run once, when the data directory is initialised (the image's
#     docker-entrypoint.sh sources it): every server of the cluster has the
#     SQL API; the store's tables are those of the server that
#     durable_cluster.store names (or this one, when it is empty).  The
#     cluster's role, which the extension creates without a password, gets
#     DC_CLUSTER_PASSWORD, so that the servers of the compose file let each
#     other's nodes and forwarded commands in (entrypoint.sh writes the
#     matching ~/.pgpass).
#
set -eu

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
	-v cluster_password="${DC_CLUSTER_PASSWORD:?DC_CLUSTER_PASSWORD must be set}" <<'EOSQL'
CREATE EXTENSION IF NOT EXISTS durable_cluster;
ALTER ROLE dc_cluster PASSWORD :'cluster_password';
EOSQL
