#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check hyperfs tests scripts
.venv/bin/python -m pytest "$@"
