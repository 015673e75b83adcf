#!/usr/bin/env bash
# Install the Debian packages AIRClass needs: ffmpeg (test publisher, ffprobe),
# redis-server (cluster/events), chromium (browser tests), iproute2 + nftables (test
# network namespace and its NAT), tesseract-ocr + Korean data (local slide OCR),
# fonts-nanum (Korean glyphs in Chromium and test slides), prometheus (+ promtool: the
# monitoring tests scrape a real node and check the alert rules), coturn (TURN relay for
# viewers on networks that block UDP; the tests start their own), zbar-tools (the tests
# decode the QR codes the pages show).
set -euo pipefail
pkgs=(ffmpeg redis-server chromium iproute2 util-linux nftables tesseract-ocr tesseract-ocr-kor
  fonts-nanum prometheus coturn zbar-tools)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
