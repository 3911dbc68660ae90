#!/usr/bin/env bash
# Runs the demo on a fresh Debian/Ubuntu machine: installs what the build needs when it is
# missing (cmake: Pingora builds zlib-ng with it), builds the release binary, and starts
# `portcullis demo` (the gateway on 127.0.0.1:8080 in front of its echo upstream on
# 127.0.0.1:9090, admin API on 127.0.0.1:9901). Extra arguments go to `portcullis demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null 2>&1; then
  echo "installing: cmake"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install a stable Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 1
fi
cargo build --release -p portcullis
exec target/release/portcullis demo "$@"
