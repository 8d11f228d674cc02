#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis:
# founds a one-node cluster (with its token: the auth checks run too) in a
# temporary dir on free ports,
# runs `schemathesis run http://ADDR/v1/openapi.json` with every check
# (no 5xx, every answer's status, content type, headers and body as the
# document says), then stops the agent and removes the dir.
#
#   scripts/schemathesis.sh                 # 50 examples per operation
#   scripts/schemathesis.sh -n 200          # more; any other arguments go
#                                           # to `schemathesis run`
#
# Needs `pip install schemathesis` (4.x). Builds the debug `shoal` binary.
# Left out: GET /v1/events (it streams forever), POST /v1/debug/faults
# (off without --fault-injection; it cuts nodes off) and POST
# /v1/acl/bootstrap (after it the cluster token this run uses no longer
# authorizes calls).
set -euo pipefail

if ! command -v schemathesis >/dev/null; then
  echo "schemathesis is not installed: pip install schemathesis" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build -q -p shoal-cli --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/debug/shoal"

dir="$(mktemp -d /tmp/shoal-test-schemathesis-XXXXXX)"
agent=""
cleanup() {
  if [ -n "$agent" ] && kill -0 "$agent" 2>/dev/null; then
    kill -INT "$agent" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

# The agent prints its token, not its API address: give it a free port.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="http://127.0.0.1:$port"
"$bin" agent --data-dir "$dir/data" --bind 127.0.0.1:0 --api "127.0.0.1:$port" \
  --dns off --no-docker --cpus 1 --memory-mb 512 >"$dir/agent.out" 2>"$dir/agent.err" &
agent=$!
token=""
for _ in $(seq 300); do
  token="$(grep -o -- '--token [^ ]*' "$dir/agent.out" 2>/dev/null | sed 's/--token //' || true)"
  [ -n "$token" ] && curl -sf "$addr/v1/health" >/dev/null && break
  kill -0 "$agent" 2>/dev/null || { cat "$dir/agent.err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$token" ] || { echo "the agent did not start" >&2; cat "$dir/agent.err" >&2; exit 1; }
echo "agent at $addr (data in $dir)"

args=(-n 50)
[ $# -gt 0 ] && args=("$@")
cd "$dir"
schemathesis run "$addr/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --exclude-path /v1/events \
  --exclude-path /v1/debug/faults \
  --exclude-path /v1/acl/bootstrap \
  --request-timeout 30 \
  --seed 1 \
  "${args[@]}"
