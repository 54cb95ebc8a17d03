#!/usr/bin/env bash
# Install the Debian packages given as arguments that are not installed yet (non-interactive, root only).
set -euo pipefail
missing=()
for p in "$@"; do
    # linux-image-* needs an initramfs tool; tiny-initramfs is the small one, but never replace one that
    # the machine already has (initramfs-tools, dracut): apt would remove it.
    if [ "$p" = tiny-initramfs ] && dpkg-query -W -f='${Status}' initramfs-tools dracut 2>/dev/null |
        grep -q "install ok installed"; then
        continue
    fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "mipha: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
fi
echo "mipha: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections || true
# Services packaged with a daemon (freeradius, etcd, prometheus) must not start on the host: tests
# start their own instances on loopback or inside namespaces. policy-rc.d 101 = "do not start".
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
# A fresh machine may be running its own apt at boot (unattended-upgrades, cloud-init): wait for the
# dpkg lock instead of failing, retry downloads, and try the whole step again after a pause.
apt_options=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=5)
retry() {
    local attempt
    for attempt in 1 2 3 4; do
        "$@" && return 0
        echo "mipha: '$*' failed (attempt $attempt), again in 15 s" >&2
        sleep 15
    done
    "$@"
}
retry apt-get "${apt_options[@]}" update -qq
retry apt-get "${apt_options[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
