#!/usr/bin/env bash
# Installs what building Baton needs and is missing on this machine: clang and libclang-dev
# (RocksDB's bindings are generated with libclang), a C++ compiler, curl, and the Rust
# components the test suite uses, the python-cinderclient the Cinder test drives, and the
# headless Chromium the dashboard test drives. Safe to
# run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v iptables >/dev/null 2>&1 || missing+=(iptables) # partition tests
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # TLS test certificates
command -v chromium >/dev/null 2>&1 || missing+=(chromium) # the dashboard's browser test

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is required (cargo not found); install the toolchain named in rust-toolchain.toml" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "$component"
  fi
done

# The stock OpenStack client, which the Cinder dialect's end-to-end test drives (PyPI).
if ! command -v cinder >/dev/null 2>&1; then
  echo "setup: installing python-cinderclient"
  python3 -m pip install --quiet --disable-pip-version-check python-cinderclient >/dev/null 2>&1 \
    || python3 -m pip install --quiet --user python-cinderclient >/dev/null 2>&1 || true
  # pyenv puts new console scripts on PATH only after a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  hash -r
  # A system Python without pip, or one that refuses pip installs: Debian's package instead.
  if ! command -v cinder >/dev/null 2>&1; then
    echo "setup: installing python3-cinderclient from Debian"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      python3-cinderclient >/dev/null
    hash -r
  fi
  command -v cinder >/dev/null 2>&1 || echo "setup: warning: the cinder command is not on PATH" >&2
fi
