#!/usr/bin/env bash
#
# test/map_cluster_role.sh
#     Lets this OS user's processes log in to the server that PGHOST,
#     PGPORT and PGUSER name as dc_cluster over the Unix socket, as the
#     nodes do (docs/security.md): that server lets local users in by peer
#     authentication only, so this maps the OS user to dc_cluster, as
#     docs/security.md tells operators to.  Used by test/run_tests.sh (its
#     throw-away server) and test/package_test.sh (pg_virtualenv's).
#
set -euo pipefail

hba=$(psql -XAtc 'SHOW hba_file')
ident=$(psql -XAtc 'SHOW ident_file')
{ echo "local all dc_cluster peer map=durable_cluster"; cat "$hba"; } > "$hba.new"
mv "$hba.new" "$hba"
echo "durable_cluster $(id -un) dc_cluster" >> "$ident"
psql -XAtc 'SELECT pg_reload_conf()' >/dev/null
