#!/usr/bin/env bash
# Installs the system packages the build needs when they are missing:
# cmake (Pingora's zlib-ng is built with it) and a C compiler (ring, zlib-ng).
# Sourced by scripts/test.sh and scripts/demo.sh.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
