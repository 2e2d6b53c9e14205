#!/usr/bin/env bash
# Installs the system packages parkgate needs on a Debian machine (run as root).
# Idempotent: it asks dpkg what is missing and only then calls apt-get, so a
# second `make run` costs a second, not a package-list refresh.
set -euo pipefail

PACKAGES=(
  # a venv from Debian's interpreter: the unprivileged postgres user can run it
  # (root's pyenv build lives in a 0700 home folder)
  python3 python3-venv python3-dev build-essential
  # native/: Ed25519 through libsodium from Cython
  libsodium-dev pkg-config
  # IC card readers (pyscard builds from source) and a real PC/SC stack for tests
  # (the vpcd virtual reader; our own virtual card answers it: docs/devices.md)
  libpcsclite-dev swig pcscd vsmartcard-vpcd
  # ticket PDFs: Latin and Chinese (CJK) fonts to embed
  fonts-dejavu-core fonts-wqy-microhei
  # serial devices as pseudo-terminal pairs in tests
  socat
  # UPS events through Network UPS Tools
  nut-server nut-client
  # the site edge tests run an edge whose clock is off by some seconds
  faketime
  # process tools the embedded runner and the tests rely on
  procps util-linux passwd
  # the live flow monitor is tested in a real headless browser (playwright drives Debian's chromium;
  # never `playwright install`), and the metrics are scraped by the real Prometheus in a test
  chromium prometheus
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "bootstrap: system packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: missing system packages: ${missing[*]}" >&2
  echo "bootstrap: run 'sudo ops/bootstrap.sh' (apt-get needs root)" >&2
  exit 1
fi

echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# NUT's post-install tries to start its services; policy-rc.d keeps apt from
# starting daemons we start ourselves in tests.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
