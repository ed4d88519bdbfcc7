# Shared by bench/run, bench/instructions and bench/limits (sourced, not run): free ports,
# waiting for a server, the mock backends and the proxy config every benchmark uses, the
# request shapes, and one wrk window. The sourcing script runs from the repository's root and
# defines die, TMP (its temp dir), PIDS (processes to stop) and SLUICE_BIN; bench/run exports
# MOCK_KEY, BENCH_KEY and BENCH_LIMITS_KEY itself, the others through start_backends.

API_PATH="/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
MSG='"messages":[{"role":"user","content":"Say hello in a few words."}]'

json_body() { echo "{$MSG,\"max_tokens\":$1}"; }                      # TOKENS
sse_body() { echo "{$MSG,\"max_tokens\":$1,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"; }
# A stream as the SDKs send one by default: usage not asked for, so for a key with token
# limits the proxy asks the backend for it and takes the usage event out of the stream.
sse_no_usage_body() { echo "{$MSG,\"max_tokens\":$1,\"stream\":true}"; }
workload_body() { # json|sse|sse-no-usage
    case $1 in json) json_body 16 ;; sse) sse_body 16 ;; sse-no-usage) sse_no_usage_body 16 ;; esac
}

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

nginx_conf() { # DIR PORT MOCK_PORT1 MOCK_PORT2 WORKERS: writes DIR/nginx.conf from bench/nginx.conf.tmpl
    mkdir -p "$1"
    sed -e "s|@PREFIX@|$1|g" -e "s|@WORKERS@|$5|g" -e "s|@PORT@|$2|g" \
        -e "s|@PORT1@|$3|g" -e "s|@PORT2@|$4|g" -e "s|@MOCK_KEY@|$MOCK_KEY|g" \
        bench/nginx.conf.tmpl >"$1/nginx.conf"
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

# For a proxy under test beside two mocks of 16 completion tokens: picks the ports (P1, P2 for
# the mocks, PS and PO for the proxy's client and ops ports), makes up the keys, starts the
# mocks and writes the proxy's config to $TMP/sluice.yaml.
start_backends() {
    read -r P1 P2 PS PO <<<"$(free_ports 4)"
    export MOCK_KEY="mock-$RANDOM$RANDOM" BENCH_KEY="bench-$RANDOM$RANDOM" BENCH_LIMITS_KEY="limits-$RANDOM$RANDOM"
    start_mock m1 "$P1" 16
    start_mock m2 "$P2" 16
    sluice_config "$P1" "$P2" >"$TMP/sluice.yaml"
}

# One wrk window of POSTs through bench/wrk.lua. Prints wrk's summary line ("BENCH k=v ...");
# dies when wrk fails, completes no call, or a call is not answered 2xx.
wrk_window() { # API_KEY BODY SECONDS THREADS CONNECTIONS URL
    local out line
    out=$(BENCH_API_KEY=$1 BENCH_BODY=$2 wrk -t"$4" -c"$5" -d"$3s" --timeout 10s -s bench/wrk.lua "$6" 2>&1) ||
        die "wrk failed: $out"
    line=$(grep '^BENCH ' <<<"$out") || die "no summary from wrk: $out"
    [ "$(summary_value "$line" err_status)" = 0 ] || die "calls not answered 2xx: $line"
    [ "$(summary_value "$line" requests)" -gt 0 ] || die "wrk completed no calls: $line"
    echo "$line"
}

summary_value() { # LINE NAME: NAME's value in a wrk summary line
    local pair
    for pair in $1; do [ "${pair%%=*}" = "$2" ] && echo "${pair#*=}" && return 0; done
    return 1
}

stop_all() { # the EXIT trap of a benchmark: stops what it started, removes its temp dir
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}

apt_install() { # PACKAGE...: installs Debian packages (root or passwordless sudo); false when it cannot
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    command -v apt-get >/dev/null || return 1
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 && return 0
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

start_otlp_receiver() { # PORT: bench/otlp_receiver.py, counting what is exported to it; false when it does not start
    python3 bench/otlp_receiver.py "$1" >"$TMP/otlp_receiver.log" 2>&1 &
    RECEIVER_PID=$!
    PIDS+=("$RECEIVER_PID")
    wait_http "http://127.0.0.1:$1/stats"
}

otlp_env() { # PORT RATIO INTERVAL_MS: OTLP_ENV, the proxy's export settings (OTLP/HTTP protobuf to PORT,
    # traces sampled at RATIO, metrics every INTERVAL_MS), for `env "${OTLP_ENV[@]}"`
    OTLP_ENV=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$1" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
        OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$2"
        OTEL_METRIC_EXPORT_INTERVAL="$3")
}

start_sluice() { # [NAME=VALUE...] BIN LOG CONFIG PORT OPS_PORT [PROXY ARGS...]: `sluice proxy` from
    # BIN with NAME=VALUE in its environment, logging to $TMP/LOG; its PID in SLUICE_STARTED_PID
    # (and PIDS). Dies (the caller's `die`) when its ops port does not answer.
    local env=()
    while [[ $1 == *=* ]]; do env+=("$1"); shift; done
    env ${env[@]+"${env[@]}"} "$1" --log-format json proxy --config "$3" --addr "127.0.0.1:$4" \
        --ops-addr "127.0.0.1:$5" "${@:6}" >"$TMP/$2" 2>&1 &
    SLUICE_STARTED_PID=$!
    PIDS+=("$SLUICE_STARTED_PID")
    wait_http "http://127.0.0.1:$5/healthz" || die "$1 did not start ($2): $(tail -5 "$TMP/$2")"
}
