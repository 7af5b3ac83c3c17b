#!/usr/bin/env bash
# Install the headless browser the web-page test drives (tests/test_serve_page.py): Debian's
# chromium and chromium-driver.  Idempotent: does nothing when both are already there.
# Never downloads a browser from anywhere but the system's package archive.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
command -v chromium >/dev/null && command -v chromedriver >/dev/null
