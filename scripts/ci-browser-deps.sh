#!/usr/bin/env bash
# What the headless-browser test (tests/browser, `make browser-test`) needs beyond the Python environment:
# Debian's Chromium and node with npm (apt), and playwright-core (npm, pinned by tests/browser/package-lock.json).
# Playwright's own browser download is never used: the test drives /usr/bin/chromium.
# Idempotent: installs only what is missing, so `make browser-test` can run it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  echo "installing ${missing[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm ci only when the lock file changed since the last install
if [ ! -f tests/browser/node_modules/.package-lock.json ] ||
   [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
echo "browser test deps: $(/usr/bin/chromium --version 2>/dev/null | head -1), node $(node --version)," \
     "playwright-core $(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version")"
