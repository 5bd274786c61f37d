#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine: system packages (FUSE 3), the project's
# virtualenv in .venv, and the JavaScript reference peer (hypercore 1.8.0) for interop tests.
# Fast when everything is already there, so the README's commands can always call it.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo

missing=()
for pkg in fuse3 libfuse3-dev pkg-config attr iproute2 rsync unzip libglib2.0-bin \
           zip sqlite3 gcc libc6-dev git; do  # (the tools tests run on a mount)
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.hyperfs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing hyperfs and its test tools into .venv" >&2
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
# An editable install compiles nothing, and where PYTHONDONTWRITEBYTECODE is set (this
# machine, many CI images) Python never caches what it compiles: every hyperfs process
# would compile all its modules again at start (~0.25 s each). Quick when up to date.
.venv/bin/python -m compileall -q hyperfs >/dev/null

if [ ! -d tests/js/node_modules/hypercore ] || [ tests/js/package.json -nt tests/js/node_modules ]; then
    echo "setup: installing the JavaScript reference peer (hypercore 1.8.0)" >&2
    (cd tests/js && npm install --silent --no-audit --no-fund >/dev/null)
    touch tests/js/node_modules
fi
