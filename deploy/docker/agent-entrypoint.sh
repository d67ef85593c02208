#!/bin/sh
# Entry point of the agent image.
#
#   run        run the agent in the foreground; it stops gracefully on SIGTERM. The default.
#   enroll     enroll this site once, then exit (an init step; a no-op when enrolled). Give
#              what the operator handed over: $SILOLINK_ENROLL_TOKEN, $SILOLINK_COORDINATOR
#              (HOST:PORT), $SILOLINK_CA_FINGERPRINT and, if not port + 1,
#              $SILOLINK_ENROLL_ADDRESS. Where the operator's credentials are at hand instead
#              (one host runs it all, as in deploy/compose.yaml): $SILOLINK_OPERATOR_CREDENTIALS,
#              $SILOLINK_SITE and $SILOLINK_SITE_KIND; the site is added first and enrolled
#              with the token that returns ($SILOLINK_OPERATOR_COORDINATOR overrides the
#              address in the credentials file).
#   other      passed to edge-agent (health, status ...).
#
# $SILOLINK_AGENT_DATA_DIR is the data directory (set in the image).
set -eu

data_dir=${SILOLINK_AGENT_DATA_DIR:?set SILOLINK_AGENT_DATA_DIR to the data directory}

fail() { echo "error: $*" >&2; exit 2; }

field() {
    printf '%s' "$added" | python -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

enroll() {
    if [ -f "$data_dir/pki/identity.pem" ]; then
        echo "this site is enrolled already ($data_dir)"
        return 0
    fi
    if [ -z "${SILOLINK_ENROLL_TOKEN:-}" ] && [ -n "${SILOLINK_OPERATOR_CREDENTIALS:-}" ]; then
        set -- --credentials "$SILOLINK_OPERATOR_CREDENTIALS"
        if [ -n "${SILOLINK_OPERATOR_COORDINATOR:-}" ]; then
            set -- "$@" --coordinator "$SILOLINK_OPERATOR_COORDINATOR"
        fi
        added=$(cloud-coordinator sites add "${SILOLINK_SITE:?set SILOLINK_SITE}" \
            --kind "${SILOLINK_SITE_KIND:-hospital}" "$@" --json)
        SILOLINK_ENROLL_TOKEN=$(field token)
        SILOLINK_CA_FINGERPRINT=$(field ca_fingerprint)
        SILOLINK_COORDINATOR=${SILOLINK_COORDINATOR:-$(field coordinator_address)}
        SILOLINK_ENROLL_ADDRESS=${SILOLINK_ENROLL_ADDRESS:-$(field enroll_address)}
    fi
    [ -n "${SILOLINK_ENROLL_TOKEN:-}" ] || fail "set SILOLINK_ENROLL_TOKEN to the site's one-time token"
    # The token reaches edge-agent through its environment, never its command line.
    export SILOLINK_ENROLL_TOKEN
    set -- --coordinator "${SILOLINK_COORDINATOR:?set SILOLINK_COORDINATOR}" \
        --ca-fingerprint "${SILOLINK_CA_FINGERPRINT:?set SILOLINK_CA_FINGERPRINT}" --data-dir "$data_dir"
    if [ -n "${SILOLINK_ENROLL_ADDRESS:-}" ]; then
        set -- "$@" --enroll-address "$SILOLINK_ENROLL_ADDRESS"
    fi
    exec edge-agent enroll "$@"
}

command=${1:-run}
[ $# -gt 0 ] && shift
case "$command" in
    enroll) enroll ;;
    run) exec edge-agent run --data-dir "$data_dir" "$@" ;;
    *) exec edge-agent "$command" "$@" ;;
esac
