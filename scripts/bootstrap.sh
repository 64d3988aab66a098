#!/usr/bin/env bash
# Installs what the checks and tests need, and only what is missing, so it is fast when everything is
# there and safe to rerun after any failure. Two scopes:
#   bash scripts/bootstrap.sh venv   step 2 only: what `make lint`, `make unit` and `make generate`
#                                    need (no root, no cluster build)
#   bash scripts/bootstrap.sh        all three steps: what `make e2e`, `make test`, `make demo` need
#   1. Debian packages: prometheus (the real Prometheus the e2e tests scrape with), libnuma1
#      (needed by the CPU build of vLLM) and lua5.4 (runs the Argo CD health check in
#      e2e/test_gitops.py), via apt-get, with one `apt-get update` only when installing.
#   2. The Python virtual environment .venv from the lock files: requirements/dev.txt (every
#      dependency, dev and plot extras included, pinned with hashes), then thrifty itself with
#      --no-deps; redone only when pyproject.toml or a lock changed since the last successful
#      install (a stamp holds their hash). `make lock` regenerates the locks.
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
scope=${1:-all}
case "$scope" in
  venv | all) ;;
  *) printf 'usage: bash scripts/bootstrap.sh [venv|all]\n' >&2; exit 2 ;;
esac
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

step="apt packages"
missing=()
if [ "$scope" = all ]; then
  for package in prometheus libnuma1 lua5.4; do
    installed "$package" || missing+=("$package")
  done
fi
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
stamp="$venv/.thrifty-lock.sha256"
want=$(cat pyproject.toml requirements/build.txt requirements/dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  step="pip install from requirements/dev.txt into $venv"
  say "installing Python dependencies from the lock (pyproject.toml or a lock changed, or first run)"
  # Hashes from the lock, not whatever an index serves today; the build backend is locked too, so
  # the editable install needs no isolated build environment fetched at install time.
  "$venv/bin/python" -m pip install -q --require-hashes -r requirements/build.txt
  "$venv/bin/python" -m pip install -q --require-hashes -r requirements/dev.txt
  step="pip install -e . (no dependencies) into $venv"
  PYTHONWARNINGS=ignore "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" >"$stamp"
fi

if [ "$scope" = all ]; then
  step="local cluster binaries (bash e2e/build.sh)"
  bash e2e/build.sh >/dev/null
fi
say "ready ($scope)"
