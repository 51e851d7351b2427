#!/usr/bin/env bash
# Installs the Debian packages Lifeboat needs to build and test, if any are missing.
set -euo pipefail
need=()
for pkg in libzstd-dev pkg-config attr; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  $SUDO apt-get install -y "${need[@]}"
fi
command -v swift >/dev/null 2>&1 || { echo "swift not found: install Swift 6 (expected at /opt/swift/usr/bin)" >&2; exit 1; }
