#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser tests (tests/dashboard/test_browser.py), from the
# Debian archive. Ubuntu's "chromium" deb only installs a snap, which does not run in containers:
# there, install a Chromium or Chrome build by other means and set PLRNN_CHROMIUM to its binary.
set -euo pipefail

for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
        "$name" --version
        exit 0
    fi
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
chromium --version
