#!/usr/bin/env bash
# Runs Vigil's whole test suite: unit tests, and integration tests that start real node processes on free
# loopback ports. This is the test command of README.md and of .ci/run.
#
#   scripts/test.sh              # everything
#   scripts/test.sh cluster      # only tests whose name contains "cluster" (arguments go to cargo test's filter)
set -euo pipefail
cd "$(dirname "$0")/.."

# Integration tests run several 3-node clusters; two test threads keep a 2-core machine from starving elections.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
exec cargo test "$@"
