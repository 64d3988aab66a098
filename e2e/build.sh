#!/usr/bin/env bash
# Builds the local cluster's binaries from Go modules into a cache outside the repository, once per
# machine and version. Each component is built in a scratch directory and moved into place only when
# complete, so a failed or interrupted build never leaves a cache entry a later run would trust.
#
#   e2e/build.sh            build what is missing, print the bin directory
#   THRIFTY_CACHE=/path     cache root (default ~/.cache/thrifty)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${THRIFTY_CACHE:-$HOME/.cache/thrifty}
bin="$cache/bin"
mkdir -p "$bin" "$cache/tmp"

# One build at a time per cache (two test sessions may bootstrap at once): a second run waits, then
# finds the entries built. Under the lock, scratch directories left by a killed build are garbage.
command -v flock >/dev/null || { echo "[build] flock (util-linux) is missing: install it and rerun $0" >&2; exit 1; }
exec 9>"$cache/build.lock"
flock 9
rm -rf "${cache:?}/tmp/"*
# The scratch directory of the step in progress; removed however the script ends.
work=""
trap 'rm -rf "$work"' EXIT

step() { printf '[build] %s\n' "$*" >&2; }
fail() {
  printf '[build] FAILED at step "%s". Nothing was added to %s for it; fix the cause and rerun %s\n' \
    "$1" "$bin" "$0" >&2
  exit 1
}

command -v go >/dev/null || { echo "[build] go is not installed: install Go 1.25+ and rerun $0" >&2; exit 1; }

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# install_entry NAME VERSION: succeeds when the versioned entry already exists.
have() { [ -x "$bin/$1-$2" ]; }

publish() { # publish NAME VERSION FILE: atomically place a finished binary and its stable link
  mv -f "$3" "$bin/$1-$2"
  ln -sfn "$1-$2" "$bin/$1"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION minor staging
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=0
  for n in "${names[@]}"; do have "$n" "$v" || missing=1; done
  if [ $missing = 0 ]; then for n in "${names[@]}"; do ln -sfn "$n-$v" "$bin/$n"; done; return; fi
  step "kubernetes $v: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (cold: 15-30 min)"
  rm -rf "$work"; work=$(mktemp -d "$cache/tmp/k8s.XXXXXX")
  minor=${v#v1.}; staging="v0.${minor}"
  local gomod
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p') \
    || fail "download k8s.io/kubernetes $v"
  {
    echo "module thrifty.local/k8sbuild"
    sed -n 's/^go \(.*\)/go \1/p' "$gomod"
    grep '^godebug' "$gomod" || true
    echo "require k8s.io/kubernetes $v"
    # k8s.io/kubernetes replaces its staging modules with local paths; point each at its release.
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
  } >"$work/go.mod"
  echo 'package main' >"$work/main.go"
  local pkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  local major=1 minor_num=${minor%%.*}
  for p in $pkg $cpkg; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor_num"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  for n in "${names[@]}"; do
    have "$n" "$v" && continue
    step "  go build $n"
    (cd "$work" && go build -mod=mod -tags selinux,notest,grpcnotrace -ldflags "$ld" \
        -o "$work/$n" "k8s.io/kubernetes/cmd/$n") || fail "go build $n $v"
    publish "$n" "$v" "$work/$n"
  done
  for n in "${names[@]}"; do ln -sfn "$n-$v" "$bin/$n"; done
}

build_etcd() {
  local v=$ETCD_VERSION gomod
  if have etcd "$v"; then ln -sfn "etcd-$v" "$bin/etcd"; return; fi
  step "etcd $v"
  rm -rf "$work"; work=$(mktemp -d "$cache/tmp/etcd.XXXXXX")
  gomod=$(cd "$work" && go mod download -json "go.etcd.io/etcd/server/v3@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p') \
    || fail "download etcd $v"
  {
    echo "module thrifty.local/etcdbuild"
    sed -n 's/^go \(.*\)/go \1/p' "$gomod"
    echo "require go.etcd.io/etcd/server/v3 $v"
    # etcd's server module replaces its sibling modules with ../ paths; pin them to the release.
    sed -n 's#^[[:space:]]*\(go.etcd.io/etcd/[^ ]*\) => \.\./.*#replace \1 => \1 '"$v"'#p' "$gomod"
  } >"$work/go.mod"
  echo 'package main' >"$work/main.go"
  (cd "$work" && go build -mod=mod -ldflags "-s -w" -o "$work/etcd" go.etcd.io/etcd/server/v3) \
    || fail "go build etcd $v"
  publish etcd "$v" "$work/etcd"
}

go_install() { # go_install NAME VERSION MODULE/PATH [EXTRA_LDFLAGS]
  local n=$1 v=$2 path=$3 extra=${4:-}
  if have "$n" "$v"; then ln -sfn "$n-$v" "$bin/$n"; return; fi
  step "$n $v"
  rm -rf "$work"; work=$(mktemp -d "$cache/tmp/$n.XXXXXX")
  (cd "$work" && GOBIN="$work" go install -ldflags "-s -w $extra" "$path@$v") || fail "go install $n $v"
  publish "$n" "$v" "$work/$n"
}

build_kstatus() { # e2e/kstatus: sigs.k8s.io/cli-utils' kstatus (what Flux uses), pinned by its go.sum
  local v
  v=$(cat "$here/kstatus/go.mod" "$here/kstatus/go.sum" "$here/kstatus/main.go" | sha256sum | cut -c1-12)
  if have kstatus "$v"; then ln -sfn "kstatus-$v" "$bin/kstatus"; return; fi
  step "kstatus probe $v (sigs.k8s.io/cli-utils)"
  rm -rf "$work"; work=$(mktemp -d "$cache/tmp/kstatus.XXXXXX")
  cp "$here/kstatus/go.mod" "$here/kstatus/go.sum" "$here/kstatus/main.go" "$work/"
  (cd "$work" && go build -mod=readonly -ldflags "-s -w" -o "$work/kstatus" .) || fail "go build kstatus"
  publish kstatus "$v" "$work/kstatus"
}
build_kubernetes
build_etcd
build_kstatus
kwok_ld="-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok "$kwok_ld"
go_install kwokctl "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwokctl "$kwok_ld"
go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
echo "$bin"
