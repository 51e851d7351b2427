#!/usr/bin/env bash
# `make bench`: release build, then the side-by-side benchmark (bench/run.py). Extra arguments go to run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
swift build -c release
python3 bench/run.py "$@"
