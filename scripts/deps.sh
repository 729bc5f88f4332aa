#!/usr/bin/env bash
# Installs hisa's build and test dependencies from Debian's packages (idempotent; quiet when present).
# Progress goes to stderr, so that a caller's stdout stays its own.
set -euo pipefail
pkgs=(g++ cmake ninja-build googletest libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev)
[ "${HISA_PYTHON:-0}" = 1 ] && pkgs+=(pybind11-dev python3-dev python3-numpy python3-pytest)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "deps: apt-get update" >&2
  $SUDO apt-get update -qq
  echo "deps: apt-get install (${#missing[@]} packages and what they need; a minute or two)" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "deps: installed" >&2
else
  echo "deps: all present" >&2
fi
