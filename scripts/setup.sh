#!/usr/bin/env bash
# Installs what Hutch needs on Debian 12, idempotently: a second run checks
# and returns in about a second. Every install step of the project lives here
# (README: "make run", "make test"), never only in someone's shell history.
set -euo pipefail

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: must run as root (installs packages; sandboxes need root)" >&2
        exit 1
    fi
}

# Debian packages, by the binary or file that proves each is there.
#   crun, runc          OCI runtimes (crun default, runc fallback)
#   mmdebstrap          builds the debian:12 template
#   busybox-static      the busybox template and test root filesystems
#   iproute2, nftables  sandbox networking
#   xfsprogs, e2fsprogs per-sandbox disk images
#   python3-venv        the E2B SDK conformance suite
#   nodejs, npm         the E2B JS SDK conformance suite
#   procps, psmisc      tests inspect processes
#   curl                README examples and smoke tests
packages=(
    "crun:/usr/bin/crun"
    "runc:/usr/sbin/runc"
    "mmdebstrap:/usr/bin/mmdebstrap"
    "busybox-static:/bin/busybox"
    "iproute2:/usr/bin/ip"
    "nftables:/usr/sbin/nft"
    "xfsprogs:/usr/sbin/mkfs.xfs"
    "e2fsprogs:/usr/sbin/mkfs.ext4"
    "procps:/usr/bin/ps"
    "psmisc:/usr/bin/killall"
    "curl:/usr/bin/curl"
    "util-linux:/usr/bin/unshare"
    "file:/usr/bin/file"
)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || packages+=("python3-venv:/nonexistent")
command -v node >/dev/null 2>&1 || packages+=("nodejs:/nonexistent")
command -v npm >/dev/null 2>&1 || packages+=("npm:/nonexistent")

missing=()
for entry in "${packages[@]}"; do
    pkg=${entry%%:*}
    file=${entry#*:}
    [ -e "$file" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    need_root
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo (Rust 1.95 or newer) is required and not on PATH" >&2
    exit 1
fi
echo "setup: ok"
