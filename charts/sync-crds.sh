#!/usr/bin/env bash
# Regenerates the chart's CRDs with the same generator that writes crds/, so the two copies are
# byte-identical. Helm installs charts/thrifty/crds/ before the templates and never upgrades or
# deletes them (see docs/install.md). e2e/test_helm.py fails when the copies differ.
#
#   charts/sync-crds.sh           write charts/thrifty/crds/
#   charts/sync-crds.sh --check   exit 1 when charts/thrifty/crds/ is stale
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
exec "$python" -m thrifty.api.crdgen --out "$root/charts/thrifty/crds" "$@"
