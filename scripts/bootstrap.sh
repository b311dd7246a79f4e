#!/usr/bin/env bash
# Install everything overlaynet's demo and tests need on a fresh Debian machine:
# Debian packages (when root and missing), a .venv with the package and its Cython fast path built.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iproute2 iputils-ping procps nftables iperf3 tcpdump tshark netsniff-ng busybox-static
              libssl-dev pkg-config)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing Debian packages ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.overlaynet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    echo "bootstrap: installing overlaynet and its test tools into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -U pip 'setuptools>=77' wheel 'Cython>=3.0,<4'
    .venv/bin/pip install -q --disable-pip-version-check --no-build-isolation -e '.[test,bench]'
    touch "$stamp"
fi
# Always rebuild the Cython extensions in place (cheap when nothing changed).
.venv/bin/python setup.py -q build_ext --inplace >/dev/null
