#!/usr/bin/env bash
# strixd's tests: installs what the end-to-end tests need (a real mosquitto
# broker, ffmpeg to make the test clip, sox/espeak-ng for audio, openssl for
# the TLS test's certificates, libasound2-dev + pkg-config to build the ALSA
# capture, libclang-dev for the v4l crate's bindgen), builds the
# `strix` converter the tests use to compile the models, then runs
# `cargo test --release -p strix-firmware`.
# Env: CARGO_TARGET_DIR is honoured; STRIXD_OUTAGE_S sets the broker outage
# of the outage test (default 30 s, as the issue asks).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in mosquitto ffmpeg sox espeak-ng openssl libasound2-dev pkg-config libclang-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package may start a system broker on 1883; the tests start their
# own on free ports and do not need it.

echo "== cargo build --release -p strix-tools (the model converter)"
cargo build --release -p strix-tools
target="${CARGO_TARGET_DIR:-target}"
export STRIX_BIN="${STRIX_BIN:-$(cd "$target/release" && pwd)/strix}"

echo "== cargo test --release -p strix-firmware"
cargo test --release -p strix-firmware
