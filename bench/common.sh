# Shared by bench/run and bench/instructions (sourced, not run): free ports, waiting for a
# server, the mock backends and the proxy config every benchmark uses, and the request shapes.
# The sourcing script defines die, TMP (its temp dir), PIDS (processes to stop), SLUICE_BIN,
# and exports MOCK_KEY, BENCH_KEY and BENCH_LIMITS_KEY.

API_PATH="/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
MSG='"messages":[{"role":"user","content":"Say hello in a few words."}]'

json_body() { echo "{$MSG,\"max_tokens\":$1}"; }                      # TOKENS
sse_body() { echo "{$MSG,\"max_tokens\":$1,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"; }

free_ports() { # N free loopback ports, bound together so they differ
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_http() { # URL [TENTHS OF A SECOND, 100]: wait until anything answers
    for _ in $(seq "${2:-100}"); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    return 1
}

start_mock() { # NAME PORT TOKENS [MOCK ARGS...]
    "$SLUICE_BIN" --log-format json mock-upstream --addr "127.0.0.1:$2" --name "$1" \
        --api-key "$MOCK_KEY" --no-record --completion-tokens "$3" "${@:4}" >"$TMP/$1.log" 2>&1 &
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$2/_mock/stats" || die "mock $1 did not start: $(tail -5 "$TMP/$1.log")"
}

# bench: no limits. bench-limits: every kind of limit, far above what a run reaches (the
# model's maximum for the counts); the pool's price lets the budget count money.
sluice_config() { # MOCK_PORT1 MOCK_PORT2
    cat <<YAML
pools:
  - name: gpt-4o
    strategy: round_robin
    price: { input_per_1m_usd: 2.5, output_per_1m_usd: 10 }
    backends:
      - { name: m1, url: "http://127.0.0.1:$1", kind: azure_openai, auth: { type: api_key, secret: "env://MOCK_KEY" } }
      - { name: m2, url: "http://127.0.0.1:$2", kind: azure_openai, auth: { type: api_key, secret: "env://MOCK_KEY" } }
client_keys:
  - { id: bench, secret: "env://BENCH_KEY", pools: [gpt-4o] }
  - id: bench-limits
    secret: "env://BENCH_LIMITS_KEY"
    pools: [gpt-4o]
    limits:
      requests_per_minute: 100000000
      tokens_per_minute: 10000000000000
      token_quota: { tokens: 10000000000000, period: month }
      budget: { usd: 1000000000, period: month }
YAML
}
