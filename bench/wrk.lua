-- wrk script for bench/run: POST a chat completion with an api-key header and print one
-- machine-readable summary line ("BENCH k=v ...") at the end.
--   BENCH_BODY       request body (JSON)
--   BENCH_API_KEY    value of the api-key header
--   BENCH_ADDRS      optional "host:port,host:port": wrk thread i connects to address i mod n
--                    (used to spread the "direct" target over both mocks)
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["api-key"] = os.getenv("BENCH_API_KEY")

local addrs = nil
local next_thread = 0

function setup(thread)
  local spec = os.getenv("BENCH_ADDRS")
  if spec == nil or spec == "" then return end
  if addrs == nil then
    addrs = {}
    for hostport in string.gmatch(spec, "[^,]+") do
      local host, port = hostport:match("^(.+):(%d+)$")
      table.insert(addrs, wrk.lookup(host, port)[1])
    end
  end
  thread.addr = addrs[(next_thread % #addrs) + 1]
  next_thread = next_thread + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
