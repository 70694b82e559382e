#!/usr/bin/env bash
# The client tests drive the daemon with curl, ab (apache2-utils) and wrk, as users do.
# Installs whichever is missing from Debian's packages when run as root; otherwise says how.
# The network-namespace test also needs ip (iproute2) and tcpdump, and root: as root they
# are installed too; without root that test is skipped, so they are not required.
set -euo pipefail
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ "$(id -u)" -eq 0 ]; then
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} for the client tests" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "the tests need: ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
