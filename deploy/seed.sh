#!/bin/sh
# Seeds the compose demo through the admin API (the compose `seed` service runs it once):
#   - pool "gpt-4o" over the two mock upstreams; their keys are secret references
#     (env://MOCK_A_KEY, env://MOCK_B_KEY) that the proxies resolve from their own environment;
#   - client key "demo" for that pool (re-created on every run: keys are shown only once);
#   - one chat completion through a proxy, to show the whole path works.
# Then prints the key and a curl line. POSIX sh + curl only (the curlimages/curl image).
#
# By hand, against the published ports:
#   ADMIN_URL=http://127.0.0.1:9090 ADMIN_TOKEN=compose-demo-admin-token \
#   PROXY_URL=http://127.0.0.1:8080 sh deploy/seed.sh
set -eu

ADMIN_URL=${ADMIN_URL:-http://control-plane-1:9090}
ADMIN_TOKEN=${ADMIN_TOKEN:?set ADMIN_TOKEN to one of the control plane tokens}
MOCK_A_URL=${MOCK_A_URL:-http://mock-a:8000}
MOCK_B_URL=${MOCK_B_URL:-http://mock-b:8000}
PROXY_URL=${PROXY_URL:-http://proxy-1:8080}
PUBLIC_PROXY_URL=${PUBLIC_PROXY_URL:-$PROXY_URL}
WAIT_SECS=${WAIT_SECS:-60}

# call METHOD PATH [JSON]: prints the body, then the HTTP status on a line of its own.
call() {
  if [ $# -ge 3 ]; then
    curl -sS -X "$1" "$ADMIN_URL$2" -H "authorization: Bearer $ADMIN_TOKEN" \
      -H 'content-type: application/json' --data "$3" -w '\n%{http_code}'
  else
    curl -sS -X "$1" "$ADMIN_URL$2" -H "authorization: Bearer $ADMIN_TOKEN" -w '\n%{http_code}'
  fi
}
status_of() { printf '%s\n' "$1" | tail -n 1; }
body_of() { printf '%s\n' "$1" | sed '$d'; }

wait_ok() { # URL WHAT
  i=0
  until curl -fsS -o /dev/null "$1"; do
    i=$((i + 1))
    if [ "$i" -ge "$WAIT_SECS" ]; then echo "seed: $2 not ready after ${WAIT_SECS}s" >&2; exit 1; fi
    sleep 1
  done
}

wait_ok "$ADMIN_URL/readyz" "control plane"

pool='{
  "name": "gpt-4o",
  "strategy": "round_robin",
  "retry": {"max_attempts": 3, "retry_on": [429, 500, 502, 503, 504], "per_try_timeout_ms": 60000},
  "backends": [
    {"name": "mock-a", "url": "'"$MOCK_A_URL"'", "kind": "azure_openai",
     "auth": {"type": "api_key", "secret": "env://MOCK_A_KEY"}},
    {"name": "mock-b", "url": "'"$MOCK_B_URL"'", "kind": "azure_openai",
     "auth": {"type": "api_key", "secret": "env://MOCK_B_KEY"}}
  ]}'
response=$(call POST /api/v1/pools "$pool")
case $(status_of "$response") in
  201|200) echo "seed: created pool gpt-4o" ;;
  409) echo "seed: pool gpt-4o exists, left as it is" ;;
  *) echo "seed: creating the pool failed: $response" >&2; exit 1 ;;
esac

response=$(call DELETE /api/v1/keys/demo)
case $(status_of "$response") in
  200|204) echo "seed: deleted the previous demo key" ;;
  404) ;;
  *) echo "seed: deleting the old demo key failed: $response" >&2; exit 1 ;;
esac
response=$(call POST /api/v1/keys '{"id": "demo", "pools": ["gpt-4o"]}')
case $(status_of "$response") in
  201|200) ;;
  *) echo "seed: creating the demo key failed: $response" >&2; exit 1 ;;
esac
key=$(body_of "$response" | sed -n 's/.*"secret" *: *"\([^"]*\)".*/\1/p')
[ -n "$key" ] || { echo "seed: no secret in $response" >&2; exit 1; }

# The proxies pick the change up over the config stream within moments; retry until they have.
i=0
until answer=$(curl -fsS "$PROXY_URL/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21" \
    -H "api-key: $key" -H 'content-type: application/json' \
    -d '{"messages": [{"role": "user", "content": "Hello from the seed job"}]}' -D - -o /dev/null); do
  i=$((i + 1))
  if [ "$i" -ge "$WAIT_SECS" ]; then echo "seed: the proxy did not serve pool gpt-4o" >&2; exit 1; fi
  sleep 1
done
backend=$(printf '%s\n' "$answer" | sed -n 's/^x-sluice-backend: *\([^[:space:]]*\).*/\1/ip')
echo "seed: a call through $PROXY_URL was answered by backend ${backend:-?}"

cat <<EOF

Sluice is seeded. Demo client key (shown once; re-run the seed job for a new one):

  $key

  curl -s '$PUBLIC_PROXY_URL/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21' \\
    -H 'api-key: $key' -H 'content-type: application/json' \\
    -d '{"messages": [{"role": "user", "content": "Hello"}]}'

EOF
