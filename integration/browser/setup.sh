#!/usr/bin/env bash
# Installs what the browser tests (integration/browser.rs → dashboard.mjs) need and is missing:
# node and npm, Debian's chromium, and playwright-core from package-lock.json. Idempotent: when
# everything is present it only checks, in well under a second.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
# Fonts for readable screenshots (chromium pulls a fallback font, this one is the usual UI font).
[ -d /usr/share/fonts/truetype/dejavu ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== browser tests: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# playwright-core ships no browser of its own here: it drives the chromium above.
if [ ! -f node_modules/playwright-core/package.json ] \
  || ! node -e 'const l=require("./package-lock.json").packages["node_modules/playwright-core"].version; if (require("./node_modules/playwright-core/package.json").version!==l) process.exit(1)' 2>/dev/null; then
  echo "== browser tests: npm ci"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
