#!/usr/bin/env bash
# Refresh the vendored axe-core used by the browser tests (tests/browser/vendor/axe-core) from the npm
# registry: `scripts/vendor_axe.sh 4.14.1`. Needs npm; checks the tarball against npm's integrity field.
set -euo pipefail
version="${1:?usage: scripts/vendor_axe.sh VERSION}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/tests/browser/vendor/axe-core"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
integrity="$(npm view "axe-core@$version" dist.integrity)"
npm pack "axe-core@$version" --silent >/dev/null
tarball="axe-core-$version.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
[ "$actual" = "$integrity" ] || { echo "integrity mismatch: $actual != $integrity" >&2; exit 1; }
tar xzf "$tarball" package/axe.min.js package/LICENSE package/LICENSE-3RD-PARTY.txt
cp package/axe.min.js package/LICENSE package/LICENSE-3RD-PARTY.txt "$dest/"
echo "axe-core $version: $integrity"
sha256sum "$dest/axe.min.js"
