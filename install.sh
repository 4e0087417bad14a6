#!/usr/bin/env bash
# Quick start on Debian 12, as root: installs faasd, starts it in the background, deploys the
# example Python handler as "hello", and prints the curl to try.
#   FAASD_LOG    where the daemon logs           (default /var/log/faasd.log)
#   FAAS_CACHE   where the example's Debian base is cached (default /var/cache/faasd)
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: faasd runs as root: sudo ./install.sh" >&2
    exit 1
fi
scripts/prepare.sh
ln -sf "$PWD/.venv/bin/faasd" /usr/local/bin/faasd
ln -sf "$PWD/.venv/bin/faas" /usr/local/bin/faas

log="${FAASD_LOG:-/var/log/faasd.log}"
if ! faas list >/dev/null 2>&1; then
    nohup faasd >>"$log" 2>&1 &
    for _ in $(seq 100); do
        faas list >/dev/null 2>&1 && break
        sleep 0.1
    done
    faas list >/dev/null || { echo "install.sh: faasd did not start; see $log" >&2; exit 1; }
fi

image="$(mktemp --suffix=.tar)"
trap 'rm -f "$image"' EXIT
echo "install.sh: building the example image (the first time takes a minute or two)"
.venv/bin/python -m tools.build_image python "$image" --cache "${FAAS_CACHE:-/var/cache/faasd}"
faas new hello -f "$image"
echo
echo "faasd is running (log: $log). Try:"
echo "  curl http://\$(faas ip hello)/"
