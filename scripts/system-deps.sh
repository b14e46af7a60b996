#!/usr/bin/env bash
# System packages the test suite uses: iproute2 (network namespaces for mDNS tests),
# nodejs + npm (the js-libp2p interoperability test), tmux (the TUI in a real terminal). Installed only when missing and root.
set -eu
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v tmux >/dev/null || missing+=(tmux)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${missing[*]}; the tests that need them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
