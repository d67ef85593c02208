#!/bin/sh
# Install the silolink edge agent on a site host as a systemd service.
#
#   sudo SILOLINK_ENROLL_TOKEN=slt_... deploy/systemd/install-agent.sh \
#       --coordinator coord.example.org:7443 --ca-fingerprint sha256:...
#
# Creates the system user `silolink`, installs silolink into a virtual environment under
# /opt/silolink, enrolls the site into /var/lib/silolink (as that user, so the key is its
# own), installs silolink-agent.service, enables and starts it. Safe to run again: an
# enrolled site is not enrolled twice, and a re-run upgrades the package and restarts the
# agent. --dry-run prints the commands instead of running them.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/silolink
state=/var/lib/silolink
user=silolink
unit_dir=/etc/systemd/system
python=python3.11
package=""
coordinator=""
fingerprint=""
enroll_address=""
start=yes
dry_run=no

usage() {
    cat <<USAGE
usage: $0 --coordinator HOST:PORT --ca-fingerprint sha256:... [options]

The one-time token is read from \$SILOLINK_ENROLL_TOKEN (kept out of the process list).
  --coordinator HOST:PORT     the coordinator's mTLS address, from the operator
  --ca-fingerprint FP         the coordinator CA's fingerprint, from the operator
  --enroll-address HOST:PORT  the enrollment listener, if not the coordinator's port + 1
  --package SPEC              what pip installs (default: this repository, else silolink)
  --python EXE                the Python 3.11+ that makes the virtual environment ($python)
  --no-start                  install and enable, but do not start now
  --dry-run                   print the commands, change nothing
USAGE
}

die() { echo "error: $*" >&2; exit 2; }

run() {
    if [ "$dry_run" = yes ]; then echo "+ $*"; else "$@"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --coordinator) coordinator=${2:?}; shift 2 ;;
        --ca-fingerprint) fingerprint=${2:?}; shift 2 ;;
        --enroll-address) enroll_address=${2:?}; shift 2 ;;
        --package) package=${2:?}; shift 2 ;;
        --python) python=${2:?}; shift 2 ;;
        --no-start) start=no; shift ;;
        --dry-run) dry_run=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

if [ -z "$package" ]; then
    if [ -f "$here/../../pyproject.toml" ]; then package=$(cd "$here/../.." && pwd); else package=silolink; fi
fi
if [ "$dry_run" = no ]; then
    [ "$(id -u)" = 0 ] || die "run as root (it creates a user and installs a service)"
    command -v systemctl >/dev/null || die "systemctl not found: this host does not run systemd"
fi
enrolled=no
if [ -f "$state/pki/identity.pem" ]; then enrolled=yes; fi
if [ "$enrolled" = no ]; then
    [ -n "$coordinator" ] || die "--coordinator is required to enroll this site"
    [ -n "$fingerprint" ] || die "--ca-fingerprint is required to enroll this site"
    [ -n "${SILOLINK_ENROLL_TOKEN:-}" ] || die "set SILOLINK_ENROLL_TOKEN to the site's one-time token"
fi

# 1. An unprivileged system user that owns the state and nothing else.
if ! getent passwd "$user" >/dev/null; then
    run useradd --system --user-group --home-dir "$state" --no-create-home --shell /usr/sbin/nologin "$user"
fi

# 2. The package in a virtual environment owned by root (the agent cannot modify its code).
run "$python" -m venv "$prefix/venv"
run "$prefix/venv/bin/pip" install --quiet --upgrade "$package"

# 3. The state directory, then enrollment as the agent's user.
run install -d -m 0750 -o "$user" -g "$user" "$state"
if [ "$enrolled" = no ]; then
    set -- "$prefix/venv/bin/edge-agent" enroll --coordinator "$coordinator" --ca-fingerprint "$fingerprint" \
        --data-dir "$state"
    if [ -n "$enroll_address" ]; then set -- "$@" --enroll-address "$enroll_address"; fi
    run runuser -u "$user" -- "$@"
fi
# enroll keeps the directory owner-only; site systems in group $user reach the local API socket.
run chmod 0750 "$state"

# 4. The unit, pointing at this prefix; enable it, start it without waiting to connect.
if [ "$dry_run" = yes ]; then
    echo "+ install $here/silolink-agent.service -> $unit_dir/silolink-agent.service"
else
    sed -e "s#/opt/silolink/venv#$prefix/venv#g" "$here/silolink-agent.service" > "$unit_dir/silolink-agent.service"
    chmod 0644 "$unit_dir/silolink-agent.service"
fi
run systemctl daemon-reload
run systemctl enable silolink-agent.service
if [ "$start" = yes ]; then
    run systemctl restart --no-block silolink-agent.service
fi

cat <<DONE
silolink agent installed. It reports "active" once connected to the coordinator:
  systemctl status silolink-agent        journalctl -u silolink-agent -f
  sudo -u $user $prefix/venv/bin/edge-agent status --data-dir $state
DONE
