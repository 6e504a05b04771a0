#!/usr/bin/env bash
#
# scripts/private_install.sh DIR [MAJOR]
#     A copy of Debian's PostgreSQL MAJOR (default 15) installation in DIR,
#     owned by whoever runs this, so that a user who cannot write
#     /usr/lib/postgresql can still install the extension and run the whole
#     suite against it:
#
#         scripts/private_install.sh ~/pg15
#         make test PG_CONFIG=~/pg15/lib/postgresql/15/bin/pg_config
#
#     PostgreSQL finds its share, lib and include directories relative to
#     where its programs are, so the copy keeps the layout under /usr:
#     lib/postgresql/MAJOR (programs, libraries, PGXS), share/postgresql/MAJOR
#     and include/postgresql.  About 60 MB.  Needs postgresql-MAJOR and
#     postgresql-server-dev-MAJOR installed.
#
set -euo pipefail

dir=${1:?usage: scripts/private_install.sh DIR [MAJOR]}
major=${2:-15}
me=private_install.sh

for d in "/usr/lib/postgresql/$major/bin" "/usr/share/postgresql/$major" "/usr/include/postgresql/$major/server"; do
	[ -d "$d" ] || { echo "$me: no $d: install postgresql-$major and postgresql-server-dev-$major first" >&2; exit 1; }
done
if [ -e "$dir/lib/postgresql/$major" ]; then
	echo "$me: $dir/lib/postgresql/$major exists already; remove it or choose another directory" >&2
	exit 1
fi

mkdir -p "$dir/lib/postgresql" "$dir/share/postgresql" "$dir/include"
cp -R "/usr/lib/postgresql/$major" "$dir/lib/postgresql/"
cp -R "/usr/share/postgresql/$major" "$dir/share/postgresql/"
cp -R /usr/include/postgresql "$dir/include/"

pg_config=$(cd "$dir" && pwd)/lib/postgresql/$major/bin/pg_config
echo "$me: PostgreSQL $major copied to $dir; build and test against it with:"
echo "    make test PG_CONFIG=$pg_config"
