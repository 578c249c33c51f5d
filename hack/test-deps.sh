#!/usr/bin/env bash
# Installs the Debian packages the test suite uses, when they are missing:
# iproute2 and iptables, for the SO_ORIGINAL_DST test that redirects
# connections inside a network namespace it creates.
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
[ ${#need[@]} -eq 0 ] && exit 0
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "test-deps: need root or sudo to install: ${need[*]}" >&2; exit 1; }
  sudo_cmd="sudo"
fi
echo "test-deps: installing ${need[*]}"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
