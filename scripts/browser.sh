#!/usr/bin/env bash
# Best effort: Debian's Chromium for the report test (tests skip cleanly without it).
command -v chromium >/dev/null 2>&1 && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: the Chromium report test will skip"; exit 0; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
( $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium ) \
  >/tmp/facecurate-chromium.log 2>&1 || echo "could not install chromium (see /tmp/facecurate-chromium.log): the report test will skip"
exit 0
