#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the real-browser test (tests/notebooks/test_browser.py).
# Idempotent and fast when both are already there.  Never fails the build: where they cannot be
# installed (no apt-get, not root, no network) it says why and the browser test skips.
set -u
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: apt-get not found; the JupyterLab browser test will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_browser: not root and no password-less sudo; the JupyterLab browser test will be skipped" >&2
        exit 0
    fi
fi
echo "install_browser: installing Debian's chromium and chromium-driver (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/tmp/install_browser.$$.log 2>&1; then
    echo "install_browser: apt-get failed (log: /tmp/install_browser.$$.log); the JupyterLab browser test will be skipped" >&2
    exit 0
fi
rm -f /tmp/install_browser.$$.log
/usr/bin/chromium --version >&2 || true
