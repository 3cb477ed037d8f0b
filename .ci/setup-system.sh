#!/usr/bin/env bash
# Debian packages the tests and benchmarks need: nginx (TLS / gateway front for the
# real servers), wrk (load generator), chromium + chromium-driver (dashboard tests).
# Idempotent and quiet: installs only what is missing, and skips apt-get update
# when everything is there already.
set -euo pipefail

PACKAGES=(nginx wrk chromium chromium-driver)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-system: ${PACKAGES[*]} already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "setup-system: need root (or sudo) to install ${missing[*]}" >&2
        exit 1
    fi
fi

echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian starts nginx on install; tests run their own instances on loopback ports.
if command -v service >/dev/null 2>&1 && [[ " ${missing[*]} " == *" nginx "* ]]; then
    $SUDO service nginx stop >/dev/null 2>&1 || true
fi
echo "setup-system: done"
