#!/bin/bash
# Installs the lakevault worker binary named in an install.env file, verified by SHA-256.
# cloud-init.yaml writes this script to /usr/local/sbin/lakevault-install-worker and runs
#   lakevault-install-worker /etc/lakevault/install.env
# install.env:
#   WORKER_URL          where the binary is: a release download, or a blob
#   WORKER_SHA256       its SHA-256 (hex); any other content is refused
#   WORKER_URL_AUTH     none: a public or pre-signed URL
#                       managed-identity: a blob read with the VM's user-assigned identity
#                       (a token for https://storage.azure.com/ from the instance metadata
#                       service; the identity needs Storage Blob Data Reader on the blob)
#   IDENTITY_CLIENT_ID  client id of that identity (managed-identity only)
# LAKEVAULT_INSTALL_ROOT (optional) installs under another root, for tests.
set -euo pipefail

env_file="${1:-/etc/lakevault/install.env}"
# shellcheck source=/dev/null
. "$env_file"
: "${WORKER_URL:?WORKER_URL is not set in $env_file}"
: "${WORKER_SHA256:?WORKER_SHA256 is not set in $env_file}"
auth="${WORKER_URL_AUTH:-none}"
dest="${LAKEVAULT_INSTALL_ROOT:-}/usr/local/bin/lakevault-worker"

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
curl_opts=(--fail --silent --show-error --location --retry 10 --retry-delay 3 --retry-connrefused)

case "$auth" in
  none)
    curl "${curl_opts[@]}" --output "$tmp" "$WORKER_URL"
    ;;
  managed-identity)
    : "${IDENTITY_CLIENT_ID:?IDENTITY_CLIENT_ID is not set in $env_file}"
    imds="http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F&client_id=${IDENTITY_CLIENT_ID}"
    token="$(curl "${curl_opts[@]}" --noproxy '*' -H 'Metadata: true' "$imds" |
      sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')"
    if [ -z "$token" ]; then
      echo "lakevault-install-worker: no access token from the instance metadata service" >&2
      exit 1
    fi
    curl "${curl_opts[@]}" -H "Authorization: Bearer $token" -H 'x-ms-version: 2021-08-06' \
      --output "$tmp" "$WORKER_URL"
    ;;
  *)
    echo "lakevault-install-worker: WORKER_URL_AUTH must be none or managed-identity, not '$auth'" >&2
    exit 2
    ;;
esac

got="$(sha256sum "$tmp" | cut -d' ' -f1)"
if [ "$got" != "$WORKER_SHA256" ]; then
  echo "lakevault-install-worker: SHA-256 of $WORKER_URL is $got, expected $WORKER_SHA256; not installed" >&2
  exit 1
fi
install -D -m 0755 "$tmp" "$dest"
echo "lakevault-install-worker: installed $dest ($got)"
