#!/usr/bin/env bash
# Install the nginx + nchan benchmark peer from Debian's packages (idempotent).
#
#   sudo-less as root:  bash scripts/peers/setup_nchan.sh
#
# Installs `nginx` and `libnginx-mod-nchan` with apt-get when either is missing and
# makes sure the *system* nginx service is not left running: the peer is started by
# scripts/peers/run_nchan.sh with its own config and prefix dir, never via /etc/nginx.
set -euo pipefail

PKGS=(nginx libnginx-mod-nchan)
MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup_nchan: need root to apt-get install ${missing[*]}" >&2
        exit 1
    fi
    # Keep the package's postinst from starting the system nginx service: a
    # policy-rc.d that exits 101 tells invoke-rc.d "do not start". Only add one
    # (and remove it again) if the machine does not already have its own.
    own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    trap '[[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
    echo "setup_nchan: installing ${missing[*]}"
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

# Belt and braces: if the system service got started anyway (no policy-rc.d honoured,
# or started earlier by someone), stop it and keep it from starting at boot.
if [[ -s /run/nginx.pid ]] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    echo "setup_nchan: stopping the system nginx service"
    service nginx stop || kill "$(cat /run/nginx.pid)" || true
fi
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
elif command -v update-rc.d >/dev/null 2>&1 && [[ -e /etc/init.d/nginx ]]; then
    update-rc.d nginx disable >/dev/null 2>&1 || true
fi

if [[ ! -f $MODULE ]]; then
    echo "setup_nchan: $MODULE not found after install" >&2
    exit 1
fi
nginx -v 2>&1
echo "libnginx-mod-nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan)"
echo "setup_nchan: module at $MODULE"
