#!/usr/bin/env bash
#
# test/export_releases.sh DIR
#     Puts the sources of every released version, exactly as released, in
#     DIR/tmp_releases/VERSION/, for the upgrade tests (test/t/026_upgrade.pl
#     and 028_rolling_upgrade.pl), which build them.  They come from this
#     repository's history, by the commit of each release (tagged vVERSION
#     too, but a clone may lack tags).  test/run_tests.sh and
#     test/in_chroot.sh run it for the copies of the tree they test; run it
#     with DIR = . before running those tests by hand.
#
set -euo pipefail

dest=${1:?usage: test/export_releases.sh DIR}
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# each release: its version and its commit
releases=(
	"0.1 8ed5212b10adfc346d0732bc5b8b5c7654574fbc"
	"0.2 320315ce2287d9bd22e2ecc9d71a40d1aaed8992"
)

rm -rf "$dest/tmp_releases"
for release in "${releases[@]}"; do
	read -r version commit <<<"$release"
	if ! git -C "$srcdir" cat-file -e "$commit^{commit}"; then
		echo "export_releases.sh: release $version (commit $commit) is not in $srcdir's history; the upgrade test needs a clone with it (not a shallow one)" >&2
		exit 1
	fi
	mkdir -p "$dest/tmp_releases/$version"
	git -C "$srcdir" archive "$commit" | tar -C "$dest/tmp_releases/$version" -xf -
done
