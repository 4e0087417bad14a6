#!/usr/bin/env bash
# Quick start on Debian 12, as root: installs faasd, starts it (under systemd when systemd runs,
# else in the background with packaging/faasd-background), deploys the example Python handler as
# "hello", and prints the curl to try. Settings in /etc/default/faasd are honoured either way.
#   FAASD_LOG    where a background faasd logs         (default /var/log/faasd.log; faasd rotates it
#                at 10 MiB and keeps 5; under systemd the log goes to the journal, which rotates it)
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
ln -sf "$PWD/packaging/faasd-background" /usr/local/bin/faasd-background

if faas list >/dev/null 2>&1; then
    echo "install.sh: faasd already runs"
elif [ -d /run/systemd/system ]; then
    cp packaging/faasd.service /etc/systemd/system/faasd.service
    systemctl daemon-reload
    systemctl enable --now faasd
    for _ in $(seq 100); do
        faas list >/dev/null 2>&1 && break
        sleep 0.1
    done
    faas list >/dev/null || { echo "install.sh: faasd did not start; see journalctl -u faasd" >&2; exit 1; }
    echo "faasd runs under systemd: systemctl status faasd, journalctl -u faasd, systemctl stop faasd"
else
    faasd-background start
fi

image="$(mktemp --suffix=.tar)"
runtime="$(mktemp --suffix=.tar)"
trap 'rm -f "$image" "$runtime"' EXIT
echo "install.sh: building the example image (the first time takes a minute or two)"
faas build handlers/hello -o "$image" --cache "${FAAS_CACHE:-/var/cache/faasd}"
faas new hello -f "$image"
echo "install.sh: adding the python and node runtimes (Debian's python3 and pip; nodejs, npm and tsc; built once and cached) and functions from source"
for language in python node; do
    case "$(faas runtime list --json)" in
        *"\"name\": \"$language\""*) ;;  # added by an earlier run
        *)
            .venv/bin/python -m tools.build_image runtime "$language" "$runtime" --cache "${FAAS_CACHE:-/var/cache/faasd}" >/dev/null
            faas runtime add "$language" -f "$runtime"
            ;;
    esac
done
faas new add --runtime python --code handlers/source/add.py
faas new add-js --runtime node --code handlers/source/add.js
echo
echo "Try:"
echo "  curl http://\$(faas ip hello)/"
echo "  curl -d '{\"a\": 1, \"b\": 2}' http://\$(faas ip add)/"
echo "  curl -d '{\"a\": 1, \"b\": 2}' http://\$(faas ip add-js)/"
