#!/usr/bin/env bash
# Installs the Debian packages the end-to-end suite (make e2e) uses, when
# they are missing: prometheus, which TestRollouts/Prometheus runs on the
# node to scrape the proxies, for the Rollout analysis `prometheus`
# provider against a real server. Only the binary is used: the test runs
# it itself with its own configuration and data directory.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "e2e-deps: need root or sudo to install: ${need[*]}" >&2; exit 1; }
  sudo_cmd="sudo"
fi
echo "e2e-deps: installing ${need[*]}"
$sudo_cmd apt-get update -qq
# Only the binary is used (the test runs its own server, on a port of its
# own, so a packaged service that systemd may start is neither needed nor in
# the way); no recommends (node exporter and the like).
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
