#!/usr/bin/env bash
# Installs the AMI client libraries the AMI listener tests drive (integration/ami_listener.rs):
# Python panoramisk in .venv and Node asterisk-manager in node_modules, both here and both
# gitignored. Idempotent: when both are present it only checks.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import panoramisk' 2>/dev/null; then
  echo "== AMI client tests: panoramisk (pip)"
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt
fi
if [ ! -f node_modules/asterisk-manager/package.json ]; then
  echo "== AMI client tests: asterisk-manager (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
