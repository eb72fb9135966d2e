#!/bin/sh
# Entrypoint of the podnet image (see docker-compose.yml).
#
#   controlplane [FLAGS]   the control plane on 0.0.0.0; writes the cluster secret and CA to the
#                          shared volume at its first start, and STATE/cluster.json so that
#                          `podnet exec`, `podnet logs` and `podnet apply` work in this container
#   agent [FLAGS]          one node agent; waits for the secret, names itself node-<N> from its
#                          compose replica number, advertises its container IP
#   anything else          run as a command (e.g. `podnet apply ...`)
#
# Settings (environment):
#   PODNET_STATE_DIR       state directory (default /var/lib/podnet; logs in STATE/logs)
#   PODNET_SECRET_FILE     cluster secret (default /var/lib/podnet/cluster/secret)
#   PODNET_CONTROLPLANE    control plane URL for agents (default https://controlplane:6443)
#   PODNET_NODE_NAME       the agent's node name (default: node-<replica number>, else hostname)
set -eu

STATE="${PODNET_STATE_DIR:-/var/lib/podnet}"
SECRET="${PODNET_SECRET_FILE:-/var/lib/podnet/cluster/secret}"
API_PORT="${PODNET_API_PORT:-6443}"
export PODNET_STATE_DIR="$STATE"

# This container's name as docker's DNS knows it (`project_node_3.project_default` under compose
# v1, `project-node-3...` under v2); the replica number is its last number.
replica_name() {
    ip="$(hostname -i | cut -d' ' -f1)"
    # shellcheck disable=SC2046
    set -- $(getent -s dns hosts "$ip") ""
    name="$(printf '%s' "${2:-}" | cut -d. -f1)"
    n="$(printf '%s' "$name" | sed -n 's/.*[_-]\([0-9][0-9]*\)$/\1/p')"
    if [ -n "$n" ]; then echo "node-$n"; else hostname | tr 'A-Z_' 'a-z-' | cut -c1-63; fi
}

case "${1:-}" in
controlplane)
    shift
    mkdir -p "$STATE/run" "$STATE/logs" "$(dirname "$SECRET")"
    rm -f "$STATE/run/controlplane.json"
    # mDNS (optional for agents here) is advertised on this container's own address.
    PODNET_MDNS_INTERFACE="${PODNET_MDNS_INTERFACE:-$(hostname -i | cut -d' ' -f1)}"
    export PODNET_MDNS_INTERFACE
    # Agents need only the secret; the CA they fetch and verify with it. A copy of the CA goes
    # next to the secret for clients in other containers (`podnet apply` fetches it itself).
    cat >"$STATE/cluster.json" <<JSON
{"api": "https://localhost:$API_PORT", "secret_file": "$SECRET",
 "ca_file": "$STATE/pki/ca.crt", "logs_dir": "$STATE/logs",
 "kubeconfig": "", "controlplane": {"address": "controlplane:$API_PORT"}, "nodes": []}
JSON
    exec podnet controlplane --listen-host 0.0.0.0 --listen-port "$API_PORT" \
        --tunnel-port "${PODNET_TUNNEL_PORT:-6444}" --dns-host 0.0.0.0 \
        --dns-port "${PODNET_DNS_PORT:-10053}" --state-dir "$STATE" --secret-file "$SECRET" \
        --tls-san "controlplane,localhost,127.0.0.1${PODNET_TLS_SAN:+,$PODNET_TLS_SAN}" \
        --ready-file "$STATE/run/controlplane.json" "$@"
    ;;
agent)
    shift
    mkdir -p "$STATE/run" "$STATE/logs"
    rm -f "$STATE/run/agent.json"
    i=0
    until [ -s "$SECRET" ]; do
        [ $((i % 10)) = 0 ] && echo "podnet agent: waiting for the cluster secret $SECRET" >&2
        i=$((i + 1)); sleep 0.5
    done
    name="${PODNET_NODE_NAME:-$(replica_name)}"
    exec podnet agent --name "$name" \
        --controlplane "${PODNET_CONTROLPLANE:-https://controlplane:$API_PORT}" \
        --listen-host 0.0.0.0 --listen-port "${PODNET_AGENT_PORT:-7000}" \
        --advertise-host "$(hostname -i | cut -d' ' -f1)" --state-dir "$STATE" \
        --secret-file "$SECRET" --ready-file "$STATE/run/agent.json" "$@"
    ;;
*)
    exec "$@"
    ;;
esac
