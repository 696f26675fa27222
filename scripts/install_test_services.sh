#!/usr/bin/env bash
# Install the services the tracking tests start for themselves: PostgreSQL (server binaries for initdb/pg_ctl)
# and headless Chromium (the MLflow UI test). Nothing is started here; each test runs its own instance on
# loopback and stops it by PID.
#
# Run:   scripts/install_test_services.sh
# Needs: root for apt-get (Debian 12). Idempotent: when every binary is present, apt is not touched.
set -euo pipefail

pg_bin() {  # the newest installed PostgreSQL server's bin dir (Debian keeps initdb off PATH)
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

packages=()
{ command -v initdb >/dev/null 2>&1 || [[ -x "$(pg_bin)/initdb" ]]; } || packages+=(postgresql)
command -v chromium >/dev/null 2>&1 || packages+=(chromium fonts-dejavu-core)

if ((${#packages[@]})); then
  echo "installing: ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${packages[@]}"
fi
# The line `make services` shows (scripts/step.sh).
initdb=$(command -v initdb || true)
postgres=$(pg_bin)
postgres=${postgres:-${initdb%/initdb}}
echo "summary: postgres ${postgres:-MISSING}, chromium $(command -v chromium || echo MISSING)"
