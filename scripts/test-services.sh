#!/usr/bin/env bash
# What the serving tests drive besides Python: headless Chromium (the chat page) and a
# PostgreSQL server (sessions). Installed with apt-get where they are missing and this
# user may install (root, or sudo without a password); elsewhere the tests that need
# them are skipped, and say so (REJOINDER_REQUIRE_SERVICES=1 turns that into a failure).
set -uo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "test services: ${missing[*]} missing and not installable here; their tests will be skipped"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "test services: ${missing[*]} missing and there is no apt-get; their tests will be skipped"
  exit 0
fi
echo "test services: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "test services: apt-get could not install ${missing[*]}"
exit 0
