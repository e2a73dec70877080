#!/usr/bin/env bash
# Offline checks of the deployment files: Dockerfiles, Kubernetes manifests (rendered with
# kustomize, validated against the Kubernetes and KEDA schemas), the systemd unit,
# cloud-init user data and the Bicep templates. Run by `make test` (target check-infra).
#
# The validators come from infra/check/requirements.txt (pinned with hashes) and are
# installed once into .lakevault/infra-tools (gitignored); they are reinstalled when the
# lockfile changes. Needs python3 (3.11+) with venv, kubectl (its built-in kustomize) and
# systemd-analyze. Extra arguments go to scripts/check_infra.py (e.g. --only k8s);
# `--self-test` instead breaks each file in a copy and checks that the checks fail.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/infra/check/requirements.txt"
venv="$root/.lakevault/infra-tools"
stamp="$venv/.lock-sha256"

install() {
  local want
  want="$(sha256sum "$lock" | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  command -v python3 >/dev/null || { echo "error: python3 (3.11+, with venv) is needed for the infra checks" >&2; exit 1; }
  mkdir -p "$root/.lakevault"
  # Serialise concurrent installs (two `make test` at once).
  exec 9>"$root/.lakevault/infra-tools.lock"
  flock 9
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "installing the infra validators (pinned in infra/check/requirements.txt)..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes --no-deps --only-binary=:all: -r "$lock" >&2
  echo "$want" >"$stamp"
}

install
if [ "${1:-}" = "--self-test" ]; then
  # Break each deployment file in turn (in a copy) and expect the checks to catch it.
  shift
  bin_dir="${CARGO_TARGET_DIR:-$root/target}/debug"
  case "$bin_dir" in /*) ;; *) bin_dir="$root/$bin_dir" ;; esac
  exec "$venv/bin/python" "$root/scripts/check_infra_selftest.py" --root "$root" --bin-dir "$bin_dir" "$@"
fi
exec "$venv/bin/python" "$root/scripts/check_infra.py" --root "$root" "$@"
