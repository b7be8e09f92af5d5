#!/usr/bin/env bash
# Install (if needed) Debian's Chromium for the dashboard's real-browser test
# (tests/service/test_dashboard_browser.py drives it with Playwright's Python API through
# executable_path: nothing is downloaded at test time). Idempotent: when a Chromium
# that starts is already there it only reports. Debian 12, run as root.
#
# Environment:
#   SKYBATCH_TEST_CHROMIUM   the browser to use  [/usr/bin/chromium]
set -euo pipefail

CHROMIUM=${SKYBATCH_TEST_CHROMIUM:-/usr/bin/chromium}

log() { printf 'browser-install: %s\n' "$*"; }
die() { printf 'browser-install: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -x $CHROMIUM ]] && version=$("$CHROMIUM" --headless --no-sandbox --version 2>/dev/null); then
	log "already installed: $version ($CHROMIUM)"
	exit 0
fi
[[ $EUID -eq 0 ]] || die "$CHROMIUM is missing and installing it needs root (apt-get install chromium)"
command -v apt-get >/dev/null || die "$CHROMIUM is missing and this is no Debian (no apt-get): install Chromium and set SKYBATCH_TEST_CHROMIUM"
log "installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || die "apt-get update failed"
apt-get install -y -qq chromium >/dev/null \
	|| die "apt-get install chromium failed"
version=$("$CHROMIUM" --headless --no-sandbox --version 2>/dev/null) \
	|| die "$CHROMIUM does not start after the install"
log "installed: $version ($CHROMIUM)"
