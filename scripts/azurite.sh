#!/usr/bin/env bash
# Installs and runs the pinned Azure Storage emulator (Azurite) used by the demo and tests.
#   scripts/azurite.sh install   npm ci from azurite/package-lock.json, if not installed yet
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/azurite"

install() {
  if [ -x "$dir/node_modules/.bin/azurite-blob" ] && [ -x "$dir/node_modules/.bin/azurite-queue" ]; then
    return 0
  fi
  command -v npm >/dev/null || { echo "error: npm (Node.js 18+) is needed to install Azurite" >&2; exit 1; }
  # Serialise concurrent installs (parallel test binaries, demo + tests).
  exec 9>"$dir/.install.lock"
  flock 9
  if [ ! -x "$dir/node_modules/.bin/azurite-blob" ]; then
    echo "installing Azurite (pinned in azurite/package-lock.json)..." >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

case "${1:-}" in
  install) install ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
