#!/usr/bin/env bash
# Installs what faasd needs on Debian 12 (as root), idempotently: runc, the tools that build
# test images offline, the headless browser the web page's tests drive (Debian's chromium and its
# chromedriver), then a virtualenv in .venv with faasd and its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."

# docker-registry, skopeo, apache2-utils (htpasswd) and haproxy run the multi-node recipe in the tests;
# podman is the baseline of bench/pull.py.
packages=(runc mmdebstrap busybox-static gcc libc6-dev python3-venv ca-certificates chromium chromium-driver
    docker-registry skopeo apache2-utils haproxy podman)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "prepare: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
