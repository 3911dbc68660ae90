#!/usr/bin/env bash
# Runs every test of the workspace. On a fresh Debian/Ubuntu machine it first installs what
# the build needs (cmake: Pingora builds zlib-ng with it). Tests start their own servers on
# ephemeral 127.0.0.1 ports; nothing else needs to be running. xmlsec1 is installed too and
# PORTCULLIS_XMLSEC1=1 set, so the SAML interop test runs xmlsec1 --verify on our signatures;
# chromium and chromium-driver too, with PORTCULLIS_CHROMIUM=1, for the brokers' browser flows.
set -euo pipefail
cd "$(dirname "$0")/.."

install_packages() {
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  fi
}

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# The Redis state store's tests start real servers (standalone and a 3-master Cluster);
# the Debian package brings redis-cli too, which joins the Cluster.
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || missing+=(redis-server)
# The SAML interop test has xmlsec1 (libxmlsec1) verify the assertions our signer makes.
command -v xmlsec1 >/dev/null 2>&1 || missing+=(xmlsec1)
# The OAuth brokers' browser flows are driven in headless Chromium over WebDriver.
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
# The HTTPS listener's tests speak HTTP/2 and HTTP/1.1 with curl (OpenSSL + nghttp2) as an
# independent client, and hold a TLS connection open with openssl s_client.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  install_packages "${missing[@]}"
fi

PORTCULLIS_XMLSEC1=1 PORTCULLIS_CHROMIUM=1 cargo test --workspace --all-targets "$@"
