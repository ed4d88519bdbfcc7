#!/usr/bin/env python3
"""Turn bench/run's raw measurements into a markdown report.

usage: report.py RAW.tsv TTFB.json META.json [SLOW.jsonl [OTLP.json]]
RAW.tsv has one row per measured wrk window (see bench/run). Figures per target and workload
are medians over the rounds; ratios are medians of the per-round ratios, so each ratio only
compares windows measured minutes apart at most, in the same run. Targets that are Sluice with
one thing changed ("limits": a key with limits; "baseline": another binary; "otlp": OTLP export
on) get a table each against plain Sluice (CPU per request difference and ratio, req/s ratio).
SLOW.jsonl has one line per slow-stream run (bench/slow_streams.py's output plus round and
target); OTLP.json is bench/otlp_receiver.py's counts.
"""
import csv
import json
import statistics
import sys

ORDER = ["direct", "nginx", "bare", "sluice", "limits", "baseline", "otlp"]
LABEL = {
    "direct": "mock, called directly",
    "nginx": "nginx, round-robin reverse proxy",
    "bare": "hyper alone (bench/bare-proxy)",
    "sluice": "Sluice",
    "limits": "Sluice, key with limits (Redis)",
    "baseline": "Sluice, baseline binary (A/B)",
    "otlp": "Sluice, OTLP export on",
}
WORKLOAD = {"json": "JSON chat", "sse": "SSE stream"}


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(value):
    return "–" if value is None else f"{value:.2f}×"


def signed(value, digits=1):
    return "–" if value is None else f"{value:+,.{digits}f}"


def md_table(header, rows, left=1):
    """A markdown table; the first `left` columns are left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" if i < left else "---:" for i in range(len(header))) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    lines.append("")
    return lines


class Windows:
    """The measured wrk windows, by (target, workload, round)."""

    def __init__(self, rows):
        self.window = {}
        for r in rows:
            req = int(r["requests"])
            tck = int(r["clk_tck"])
            dur = int(r["duration_us"]) / 1e6
            # Commands Redis ran in the window (None without Redis, or in an older raw file).
            store = int(r["store_commands"]) if r.get("store_commands") not in (None, "") else None
            self.window[(r["target"], r["workload"], int(r["round"]))] = {
                "requests": req,
                "rps": req / dur if dur else 0,
                "p50": int(r["p50_us"]) / 1000,
                "p99": int(r["p99_us"]) / 1000,
                "cpu": int(r["server_ticks"]) * 1e6 / tck / req if req else None,
                "mock_cpu": int(r["mock_ticks"]) * 1e6 / tck / req if req else None,
                "upstream": int(r["upstream_requests"]),
                "non2xx": int(r["err_status"]),
                "socket": sum(int(r[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout")),
                "store": store,
                "store_per_req": store / req if store is not None and req else None,
                "store_per_s": store / dur if store is not None and dur else None,
                "duration": dur,
            }
        self.targets = [t for t in ORDER if any(k[0] == t for k in self.window)]
        self.workloads = [w for w in WORKLOAD if any(k[1] == w for k in self.window)]
        self.rounds = sorted({k[2] for k in self.window})

    def get(self, target, workload, rnd):
        return self.window.get((target, workload, rnd))

    def med(self, target, workload, key):
        vals = [w[key] for r in self.rounds if (w := self.get(target, workload, r)) and w[key] is not None]
        return statistics.median(vals) if vals else None

    def per_round(self, target, base, workload, key, combine):
        vals = []
        for r in self.rounds:
            a, b = self.get(target, workload, r), self.get(base, workload, r)
            if a and b and a[key] is not None and b[key] is not None:
                vals.append(combine(a[key], b[key]))
        return vals

    def med_ratio(self, target, base, workload, key):
        vals = self.per_round(target, base, workload, key, lambda a, b: a / b if a and b else None)
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def per_round_diffs(self, target, base, workload, key):
        return self.per_round(target, base, workload, key, lambda a, b: a - b)

    def med_diff(self, target, base, workload, key):
        vals = self.per_round_diffs(target, base, workload, key)
        return statistics.median(vals) if vals else None

    def total(self, target, workload, key):
        return sum(w[key] for r in self.rounds if (w := self.get(target, workload, r)))


def comparison_table(win, target, base, names, extra=()):
    """`target` against `base` (both Sluice), per workload: req/s and CPU per request of each,
    their ratios and the CPU difference with its range over the rounds. `names` = (base's,
    target's) short names for the headers; `extra` = (header, cell(workload)) columns."""
    b, t = names
    header = ["workload", f"req/s {b}", f"req/s {t}", f"req/s × {b}", f"CPU µs/req {b}",
              f"CPU µs/req {t}", "Δ CPU µs/req (range)", f"CPU × {b}"] + [h for h, _ in extra]
    rows = []
    for w in win.workloads:
        diffs = win.per_round_diffs(target, base, w, "cpu")
        spread = f" ({min(diffs):+.1f} … {max(diffs):+.1f})" if len(diffs) > 1 else ""
        rows.append([
            WORKLOAD[w],
            fmt(win.med(base, w, "rps")),
            fmt(win.med(target, w, "rps")),
            ratio(win.med_ratio(target, base, w, "rps")),
            fmt(win.med(base, w, "cpu"), 1),
            fmt(win.med(target, w, "cpu"), 1),
            signed(win.med_diff(target, base, w, "cpu")) + spread,
            ratio(win.med_ratio(target, base, w, "cpu")),
        ] + [cell(w) for _, cell in extra])
    return md_table(header, rows)


def main_table(win):
    nginx = "nginx" in win.targets
    rows = []
    for w in win.workloads:
        for t in win.targets:
            vs_nginx = t not in ("direct", "nginx") and nginx
            rows.append([
                LABEL[t],
                WORKLOAD[w],
                fmt(win.med(t, w, "rps")),
                fmt(win.med(t, w, "p50"), 2),
                fmt(win.med(t, w, "p99"), 2),
                fmt(win.med(t, w, "cpu"), 1),
                "–" if t == "direct" else ratio(win.med_ratio(t, "direct", w, "cpu")),
                ratio(win.med_ratio(t, "nginx", w, "cpu")) if vs_nginx else "–",
                ratio(win.med_ratio(t, "nginx", w, "rps")) if vs_nginx else "–",
                fmt(win.med(t, w, "mock_cpu"), 1),
                f"{win.total(t, w, 'non2xx')} / {win.total(t, w, 'socket')}",
            ])
    return md_table(["target", "workload", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "CPU × direct",
                     "CPU × nginx", "req/s × nginx", "mocks' CPU µs/req", "non-2xx / socket errors"],
                    rows, left=2)


def limits_section(win, meta):
    with_store = any(v["store"] is not None for k, v in win.window.items() if k[0] in ("sluice", "limits"))
    intro = (
        "Client-key limits, on against off: the same Sluice process and port, *Sluice* called with a "
        "key without limits, *key with limits* with one that has every kind (requests and tokens per "
        "minute, a monthly token quota, a monthly budget on a priced pool), all far above what the run "
        "reaches. The SSE body already asks for usage (`stream_options.include_usage`), so the proxy "
        "does not rewrite it for the budget. Δ and ratios: medians of per-round values (the range is "
        "the lowest and highest round). "
        + (f"Store commands: Redis `INFO commandstats` (calls, Lua scripts' inner commands included) "
           f"before and after each window; the proxy syncs on a timer, not per request (a counter is synced until "
           f"it has been idle 10 s, so a no-limits window right after a limits window still sees some). "
           f"{meta.get('redis_note', '')}"
           if with_store else meta.get("redis_note", "No Redis: the proxy counted limits alone."))
    )

    def per_req(w):
        v = win.med("limits", w, "store_per_req")
        return "–" if v is None else f"{v:.5f}"

    return [intro, ""] + comparison_table(win, "limits", "sluice", ("no limits", "limits"), [
        ("store commands/req", per_req),
        ("store commands/s, limits / no limits windows",
         lambda w: f"{fmt(win.med('limits', w, 'store_per_s'), 1)} / {fmt(win.med('sluice', w, 'store_per_s'), 1)}"),
    ])


def baseline_section(win, meta):
    intro = (
        "A/B: *Sluice* (this build) against *baseline* (another binary, same config and mocks, its own "
        "port), in the same interleaved rounds. Δ and ratios: medians of per-round values (range: lowest "
        f"and highest round). {meta.get('baseline_note', '')}"
    )
    return [intro, ""] + comparison_table(win, "sluice", "baseline", ("baseline", "this build"), [
        ("p99 ms baseline / this build",
         lambda w: f"{fmt(win.med('baseline', w, 'p99'), 2)} / {fmt(win.med('sluice', w, 'p99'), 2)}"),
    ])


def otlp_section(win, meta, otlp):
    traces, metrics = otlp.get("/v1/traces", {}), otlp.get("/v1/metrics", {})
    requests = sum(win.total("otlp", w, "requests") for w in win.workloads)
    spans = traces.get("spans", 0)
    intro = (
        "OTLP export, on against off: a second Sluice process with the same config and its own port, "
        "measured in the same interleaved rounds as *Sluice*; its CPU includes the exporter threads. "
        f"{meta.get('otlp_note', '')} Target: CPU and req/s within 1.15× of export off. "
        f"Received over the whole run: {traces.get('requests', 0):,} trace exports with {spans:,} spans "
        f"of {traces.get('traces', 0):,} traces"
        + (f" ({traces.get('traces', 0) / otlp['served']:.1%} of the {otlp['served']:,} requests the process "
           f"served, warm-up and time to first byte included)" if otlp.get("served") else "")
        + f", and {metrics.get('requests', 0):,} metric exports with {metrics.get('metrics', 0):,} metrics"
        + (f"; {otlp['malformed']} exports did not parse" if otlp.get("malformed") else "")
        + f". The table's windows hold {requests:,} of those requests."
    )
    return [intro, ""] + comparison_table(win, "otlp", "sluice", ("off", "on"), [
        ("p99 ms off / on", lambda w: f"{fmt(win.med('sluice', w, 'p99'), 2)} / {fmt(win.med('otlp', w, 'p99'), 2)}"),
    ])


def slow_section(slow, meta):
    """One row per target over the rounds: the fewest streams open at once, all completions and
    errors, the highest peak RSS, the peak of every round, and what the first round's streams
    cost over the fresh process's idle RSS."""
    rows, notes = [], []
    for t in [t for t in ORDER if any(r["target"] == t for r in slow)]:
        runs = sorted((r for r in slow if r["target"] == t), key=lambda r: r["round"])
        streams = runs[0]["streams"]
        peaks = [r["peak_kb"] for r in runs]
        idle = runs[0]["idle_kb"]
        open_min = min(r["open_peak"] for r in runs)
        rows.append([
            LABEL[t],
            f"{open_min:,} of {streams:,}",
            f"{sum(r['completed'] for r in runs):,} / {sum(r['streams'] for r in runs):,}",
            str(sum(r["errors"] for r in runs)),
            fmt(max(peaks) / 1024, 1),
            " / ".join(fmt(p / 1024, 1) for p in peaks),
            fmt((peaks[0] - idle) / streams, 1),
            fmt(idle / 1024, 1),
            fmt(statistics.median(r["stream_p50_s"] for r in runs if r["stream_p50_s"] is not None), 1)
            if any(r["stream_p50_s"] is not None for r in runs) else "–",
        ])
        # The streams of one round are all gone before the next: a peak that keeps rising is
        # memory kept after them (allocator retention or a leak).
        if len(peaks) > 1 and all(b > a * 1.05 for a, b in zip(peaks, peaks[1:])):
            notes.append(f"Slow streams through {LABEL[t]}: the peak RSS rose every round "
                         f"({' → '.join(fmt(p / 1024, 1) for p in peaks)} MB; idle before each round "
                         f"{' → '.join(fmt(r['idle_kb'] / 1024, 1) for r in runs)} MB): "
                         "memory is kept after the streams end.")
        for r in runs:
            if r["errors"]:
                notes.append(f"Slow streams through {LABEL[t]}, round {r['round']}: {r['errors']} errors {r['error_kinds']}.")
            if r["open_peak"] < r["streams"]:
                notes.append(f"Slow streams through {LABEL[t]}, round {r['round']}: at most {r['open_peak']:,} of "
                             f"{r['streams']:,} open at once (streams ended before the last ones opened).")
    rounds = len({r["round"] for r in slow})
    intro = (
        f"{slow[0]['streams']:,} concurrent slow streams, once per target in each of "
        f"{'the ' + str(rounds) + ' rounds' if rounds > 1 else 'one round'}, through a "
        "fresh nginx and a fresh Sluice (same configs as above, Sluice without Redis) started for this "
        f"test. {meta.get('slow_note', '')} RSS = VmRSS from `/proc/PID/status` every 100 ms (nginx: master "
        "and workers summed, so their shared pages count more than once); peak = highest sample over all "
        "rounds (each round's peak beside it); idle = before the first round; per stream = (first round's "
        "peak − idle) ÷ streams. Completed = "
        "streams that ended in `data: [DONE]`. Target: Sluice ≤ 48 MB RSS at 1,000 concurrent slow streams."
    )
    table = md_table(["target", "streams open at once (fewest of the rounds)", "completed", "errors",
                      "RSS MB (peak)", "RSS MB peak by round", "RSS per stream KB", "RSS MB idle",
                      "stream s (p50)"], rows)
    return [intro, ""] + table, notes


def ttfb_section(win, ttfb):
    base = (ttfb.get("direct") or {}).get("first_p50_us")
    n = max(v["n"] for v in ttfb.values())
    rows = []
    for t in win.targets:
        v = ttfb.get(t)
        if not v:
            continue
        added = None if t == "direct" or base is None or v["first_p50_us"] is None else v["first_p50_us"] - base
        rows.append([LABEL[t], fmt(v["head_p50_us"]), fmt(v["first_p50_us"]),
                     "–" if added is None else f"{added:+,.0f}", fmt(v["first_p90_us"]), str(v["errors"])])
    return [f"Streaming time to first byte: {n} sequential SSE requests per target, interleaved, "
            "one keep-alive connection each (python3 http.client), median.", ""] + md_table(
        ["target", "headers µs", "first SSE chunk µs", "added vs direct µs", "p90 first chunk µs", "errors"], rows)


def checks(win, meta, ttfb):
    """Findings worth a human's eye."""
    notes = []
    for w in win.workloads:
        for t in win.targets:
            errs, sock = win.total(t, w, "non2xx"), win.total(t, w, "socket")
            if errs or sock:
                notes.append(f"{LABEL[t]} / {w}: {errs} non-2xx responses and {sock} socket errors in measured windows.")
            req, up = win.total(t, w, "requests"), win.total(t, w, "upstream")
            # wrk stops counting at the end of its window while a few requests are in flight.
            if up and abs(up - req) > int(meta["connections"]) * len(win.rounds) * 2:
                notes.append(f"{LABEL[t]} / {w}: mocks saw {up:,} requests for {req:,} completed by wrk.")
    direct_sse = win.med("direct", "sse", "p50") if "sse" in win.workloads else None
    if direct_sse is not None and direct_sse > 20:
        notes.append(
            f"SSE windows are latency-bound, not CPU-bound: even called directly, one unpaced stream of "
            f"{meta['tokens']} tokens takes {direct_sse:.0f} ms (p50) on a keep-alive connection, so req/s "
            f"there is about connections ÷ that time for every target, and CPU per request includes idle wake-ups."
        )
    for t, v in ttfb.items():
        if v["errors"]:
            notes.append(f"{LABEL.get(t, t)}: {v['errors']} failed requests in the time-to-first-byte run.")
    return notes


def load_json_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    raw_path, ttfb_path, meta_path = sys.argv[1:4]
    with open(raw_path) as f:
        win = Windows(list(csv.DictReader(f, delimiter="\t")))
    with open(ttfb_path) as f:
        ttfb = json.load(f)
    with open(meta_path) as f:
        meta = json.load(f)
    slow = load_json_lines(sys.argv[4]) if len(sys.argv) > 4 else []
    otlp = {}
    if len(sys.argv) > 5:
        with open(sys.argv[5]) as f:
            otlp = json.load(f)
    store = meta.get("limits_store", "Redis")
    LABEL["limits"] = f"Sluice, key with limits ({'Redis' if store == 'Redis' else 'no Redis'})"

    out = [f"### Sluice benchmark ({meta['date']}, commit {meta['commit']})", ""]
    out.append(
        f"{meta['cpus']} CPUs, loopback, two `sluice mock-upstream` backends ({meta['tokens']} completion "
        f"tokens, no pacing); wrk {meta['connections']} connections / {meta['threads']} threads, "
        f"{meta['rounds']} interleaved rounds of {meta['duration']} s windows per target and workload "
        f"after a {meta['warmup']} s warm-up, medians reported. CPU = utime+stime of the server under "
        f"test from `/proc/PID/stat` (both mocks for *direct*, master+workers for nginx) ÷ requests. "
        f"Ratios are medians of per-round ratios. {meta['nginx_note']} {meta.get('bare_note', '')} "
        f"{meta.get('sluice_note', '')}".rstrip()
    )
    out.append("")
    out += main_table(win)
    if "limits" in win.targets and "sluice" in win.targets:
        out += limits_section(win, meta)
    if "baseline" in win.targets and "sluice" in win.targets:
        out += baseline_section(win, meta)
    if "otlp" in win.targets and "sluice" in win.targets:
        out += otlp_section(win, meta, otlp)
    notes = []
    if slow:
        section, notes = slow_section(slow, meta)
        out += section
    if ttfb:
        out += ttfb_section(win, ttfb)
    notes = checks(win, meta, ttfb) + notes + meta.get("notes", [])
    if "otlp" in win.targets and not otlp.get("/v1/traces", {}).get("spans"):
        notes.append("No spans reached the OTLP receiver: trace export did not happen.")
    if "otlp" in win.targets and not otlp.get("/v1/metrics", {}).get("requests"):
        notes.append("No metric export reached the OTLP receiver.")
    if notes:
        out.append("Notes:")
        out.extend(f"- {n}" for n in notes)
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
