#!/usr/bin/env bash
# System packages the container tests and benchmarks need (Debian/Ubuntu, apt).
#
# Idempotent: installs only what is missing (one `apt-get update`, then `apt-get install -y`),
# does nothing when everything is present, and touches no configuration: the tests pass
# `--runtime runc --ulimit ...` to podman themselves (see ../shared/CONTAINERS.md).
#
#   podman runc            run the built images (crun fails here: cgroups hybrid mode)
#   containernetworking-plugins   `podman run -p HOST:CONTAINER`
#   skopeo umoci           copy and inspect images without a daemon
#   docker-registry        a real OCI distribution registry on 127.0.0.1
#   mmdebstrap             an offline Debian base image with Python
#   ca-certificates        TLS to the package indexes (wheels, Debian mirror)
#   binutils               readelf: the tests check modelcrate's ELF reader against it
#
# Usage: scripts/system-deps.sh [--check]   (--check: report what is missing, install nothing)
set -euo pipefail

PACKAGES=(podman runc containernetworking-plugins skopeo umoci docker-registry mmdebstrap ca-certificates binutils)

die() {
    echo "system-deps: error: $*" >&2
    exit 1
}

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

check_only=0
case "${1:-}" in
    "") ;;
    --check) check_only=1 ;;
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (use --check or nothing)" ;;
esac

command -v dpkg-query >/dev/null 2>&1 ||
    die "dpkg-query not found: this script installs Debian packages (${PACKAGES[*]}); on another system install podman, runc, skopeo, umoci, a distribution registry and mmdebstrap by hand"

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system-deps: all present (${PACKAGES[*]})"
    exit 0
fi

if [ "$check_only" -eq 1 ]; then
    echo "system-deps: missing: ${missing[*]}" >&2
    exit 1
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
        die "missing ${missing[*]}; run as root or install sudo (or: apt-get install -y ${missing[*]})"
    sudo -n true 2>/dev/null ||
        die "missing ${missing[*]}; sudo needs a password here: run 'sudo $0' once"
    SUDO=(sudo -n)
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q ||
    die "apt-get update failed (no access to the Debian mirror?); packages still missing: ${missing[*]}"
"${SUDO[@]}" apt-get install -y -q "${missing[@]}" ||
    die "apt-get install failed for: ${missing[*]}"

still=()
for pkg in "${missing[@]}"; do
    installed "$pkg" || still+=("$pkg")
done
[ "${#still[@]}" -eq 0 ] || die "still not installed after apt-get: ${still[*]}"
echo "system-deps: installed ${missing[*]}"
