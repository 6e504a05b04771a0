#!/usr/bin/env bash
#
# test/copy_tree.sh SRC DEST
#     Copies the source tree SRC into the existing directory DEST, without
#     what builds and test runs leave in it (objects, results, temporary
#     servers, Debian build directories, node_modules), so that a test
#     builds from the sources alone.  Used by test/run_tests.sh,
#     test/in_chroot.sh and test/package_test.sh.  tar rather than rsync:
#     nothing beyond coreutils and tar is needed.
#
# Copyright (c) 2026, the durable_cluster developers

set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 SRC DEST" >&2; exit 2; }

tar -C "$1" -cf - \
	--exclude=./.git \
	--exclude=./results \
	--exclude=./tmp_check \
	--exclude=./tmp_releases \
	--exclude=./log \
	--exclude=./regression.diffs \
	--exclude=./regression.out \
	--exclude=./examples/node/node_modules \
	--exclude=./examples/node/.npm-cache \
	--exclude=./debian/.debhelper \
	--exclude=./debian/files \
	--exclude='./debian/postgresql-*-durable-cluster' \
	--exclude='*.o' \
	--exclude='*.bc' \
	--exclude='*.so' \
	. | tar -C "$2" -xf -
