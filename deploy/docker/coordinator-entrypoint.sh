#!/bin/sh
# Entry point of the coordinator image (Docker, compose and Kubernetes).
#
#   serve      make the data directory ready if it is not (see prepare), then run the
#              coordinator in the foreground; it stops gracefully on SIGTERM. The default.
#   prepare    only make the data directory ready, once: restore the seed backup at
#              $SILOLINK_SEED_FILE if set (Kubernetes: the keys come from a Secret), else
#              `cloud-coordinator init` for the names in $SILOLINK_HOSTNAMES.
#   other      passed to cloud-coordinator (health, sites list, backup ...).
#
# $SILOLINK_COORDINATOR_DATA_DIR is the data directory (set in the image). Every setting of
# coordinator.toml can be overridden from the environment (SILOLINK_COORDINATOR_LISTEN ...).
set -eu

data_dir=${SILOLINK_COORDINATOR_DATA_DIR:?set SILOLINK_COORDINATOR_DATA_DIR to the data directory}

fail() { echo "error: $*" >&2; exit 2; }

prepare() {
    if [ -f "$data_dir/coordinator.toml" ]; then
        return 0
    fi
    if [ -n "${SILOLINK_SEED_FILE:-}" ]; then
        [ -f "$SILOLINK_SEED_FILE" ] || fail "$data_dir holds no coordinator and there is no seed backup at $SILOLINK_SEED_FILE"
        cloud-coordinator restore --input "$SILOLINK_SEED_FILE" --data-dir "$data_dir"
        return 0
    fi
    set --
    for name in ${SILOLINK_HOSTNAMES:-}; do
        set -- "$@" --hostname "$name"
    done
    [ $# -gt 0 ] || fail "set SILOLINK_HOSTNAMES to the names sites dial, or SILOLINK_SEED_FILE to a backup to start from"
    if [ -n "${SILOLINK_PUBLIC_ADDRESS:-}" ]; then
        set -- "$@" --public-address "$SILOLINK_PUBLIC_ADDRESS"
    fi
    cloud-coordinator init --data-dir "$data_dir" "$@"
}

command=${1:-serve}
[ $# -gt 0 ] && shift
case "$command" in
    prepare) prepare ;;
    serve) prepare; exec cloud-coordinator serve --data-dir "$data_dir" "$@" ;;
    *) exec cloud-coordinator "$command" "$@" ;;
esac
