#!/usr/bin/env bash
# System packages the test suite drives for real: Debian's Chromium and ChromeDriver (the
# console's browser tests) and PostgreSQL (site data read in place). Installs only what is
# missing, so a second run costs nothing. Without apt-get (not Debian), it says what to
# install and carries on: the tests that need these packages skip, naming the reason.
set -euo pipefail

wanted=(chromium chromium-driver postgresql)
missing=()
for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "install-system-packages: no apt-get here; install ${missing[*]} yourself for the full test suite" >&2
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-system-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
