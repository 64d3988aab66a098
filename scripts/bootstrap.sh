#!/usr/bin/env bash
# Installs what the checks and tests need, and only what is missing, so it is fast when everything is
# there and safe to rerun after any failure:
#   1. Debian packages: prometheus (the real Prometheus the e2e tests scrape with), libnuma1
#      (needed by the CPU build of vLLM) and lua5.4 (runs the Argo CD health check in
#      e2e/test_gitops.py), via apt-get, with one `apt-get update` only when installing.
#   2. The Python virtual environment .venv with `pip install -e '.[dev]'`, redone only when
#      pyproject.toml changed since the last successful install (a stamp holds its hash).
#   3. The local cluster's binaries (Kubernetes, etcd, KWOK, Helm) via e2e/build.sh into
#      ~/.cache/thrifty (or $THRIFTY_CACHE); a no-op when the cache is complete.
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default .venv).
set -euo pipefail
# Progress and tool output go to stderr: `eval "$(make -s cluster-up)"` reads only the exports.
exec 1>&2

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv=${VENV:-.venv}
python=${PYTHON:-python3}
step="start"

on_error() {
  local code=$?
  printf '[bootstrap] FAILED at step "%s" (exit %s). Fix the cause shown above and rerun: bash scripts/bootstrap.sh (or make bootstrap)\n' \
    "$step" "$code" >&2
  exit "$code"
}
trap on_error ERR

say() { printf '[bootstrap] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo -n "$@"
  else say "need root for: $*"; return 1
  fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

step="apt packages (prometheus libnuma1 lua5.4)"
missing=()
for package in prometheus libnuma1 lua5.4; do
  installed "$package" || missing+=("$package")
done
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null && [ ! -x "$venv/bin/python" ]; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  # Debian starts a package's service on install: the system prometheus would listen on *:9090.
  # The tests start their own on 127.0.0.1, so a temporary policy-rc.d keeps services from starting.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
    trap 'as_root rm -f "$policy"' EXIT
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

step="python virtual environment ($venv)"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  say "$python is older than 3.11; set PYTHON=/path/to/python3.11+"
  false
fi
[ -x "$venv/bin/python" ] || { say "creating $venv"; "$python" -m venv "$venv"; }
stamp="$venv/.thrifty-pyproject.sha256"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  step="pip install -e '.[dev]' into $venv"
  say "installing Python dependencies (pyproject.toml changed or first run)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e '.[dev]'
  echo "$want" >"$stamp"
fi

step="local cluster binaries (bash e2e/build.sh)"
bash e2e/build.sh >/dev/null
say "ready"
