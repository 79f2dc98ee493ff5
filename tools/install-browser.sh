#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/test_web.py), installed with apt-get when
# /usr/bin/chromium is missing; does nothing when it is there. The tests drive this system
# browser through Playwright: never `playwright install`, which downloads a browser build.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-browser: no apt-get here; install Chromium as /usr/bin/chromium (or set" \
        "STTS_CHROMIUM) for tests/test_web.py, which is skipped without it" >&2
    exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "install-browser: $(/usr/bin/chromium --version)"
