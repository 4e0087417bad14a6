#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine, as root: installs what it needs
# (scripts/prepare.sh), checks the code with ruff and mypy, builds the test images once (cached in
# $FAAS_TEST_CACHE), runs pytest.
# Extra arguments go to pytest, e.g. ./test.sh tests/unit -k archive
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the integration tests run the real daemon and runc: run as root (sudo ./test.sh)" >&2
    exit 1
fi
scripts/prepare.sh
.venv/bin/ruff check .
.venv/bin/mypy
export FAAS_TEST_CACHE="${FAAS_TEST_CACHE:-/var/cache/faasd-tests}"
exec .venv/bin/python -m pytest "$@"
