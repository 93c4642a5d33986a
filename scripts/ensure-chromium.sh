#!/usr/bin/env bash
# Makes sure a Chromium is there for the console's browser test (test/console): uses the one at
# $TURNPIKE_CHROMIUM (default /usr/bin/chromium), or installs Debian's package. playwright-core drives
# it by its executable path; nothing is downloaded by playwright itself.
set -euo pipefail
chromium="${TURNPIKE_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$chromium" ]; then
  echo "Chromium is at $chromium"
else
  echo "installing Chromium from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  [ -x "$chromium" ] || { echo "no Chromium at $chromium after installing; set TURNPIKE_CHROMIUM to one" >&2; exit 1; }
fi
"$chromium" --version
