#!/usr/bin/env python3
"""Turn bench/run's raw measurements into a markdown report.

usage: report.py RAW.tsv TTFB.json META.json
RAW.tsv has one row per measured wrk window (see bench/run). Figures per target and workload
are medians over the rounds; ratios are medians of the per-round ratios, so each ratio only
compares windows measured minutes apart at most, in the same run. The "limits" target is the
same Sluice process as "sluice", called with a key that has limits: a second table compares the
two (CPU per request difference and ratio, req/s ratio, shared-store commands).
"""
import csv
import json
import statistics
import sys

ORDER = ["direct", "nginx", "sluice", "limits", "baseline"]
LABEL = {
    "direct": "mock, called directly",
    "nginx": "nginx, round-robin reverse proxy",
    "sluice": "Sluice",
    "limits": "Sluice, key with limits (Redis)",
    "baseline": "Sluice, baseline binary (A/B)",
}


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(value):
    return "–" if value is None else f"{value:.2f}×"


def signed(value, digits=1):
    return "–" if value is None else f"{value:+,.{digits}f}"


def main():
    raw_path, ttfb_path, meta_path = sys.argv[1:4]
    with open(raw_path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    with open(ttfb_path) as f:
        ttfb = json.load(f)
    with open(meta_path) as f:
        meta = json.load(f)
    store = meta.get("limits_store", "Redis")
    LABEL["limits"] = f"Sluice, key with limits ({'Redis' if store == 'Redis' else 'no Redis'})"

    # window[(target, workload, round)] = figures of that window
    window = {}
    for r in rows:
        req = int(r["requests"])
        tck = int(r["clk_tck"])
        dur = int(r["duration_us"]) / 1e6
        window[(r["target"], r["workload"], int(r["round"]))] = {
            "requests": req,
            "rps": req / dur if dur else 0,
            "p50": int(r["p50_us"]) / 1000,
            "p99": int(r["p99_us"]) / 1000,
            "cpu": int(r["server_ticks"]) * 1e6 / tck / req if req else None,
            "mock_cpu": int(r["mock_ticks"]) * 1e6 / tck / req if req else None,
            "upstream": int(r["upstream_requests"]),
            "non2xx": int(r["err_status"]),
            "socket": sum(int(r[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout")),
            # Commands Redis ran in the window (None without Redis, or in an older raw file).
            "store": int(r["store_commands"]) if r.get("store_commands") not in (None, "") else None,
            "duration": dur,
        }
        w = window[(r["target"], r["workload"], int(r["round"]))]
        w["store_per_req"] = w["store"] / req if w["store"] is not None and req else None
        w["store_per_s"] = w["store"] / dur if w["store"] is not None and dur else None
    targets = [t for t in ORDER if any(k[0] == t for k in window)]
    workloads = [w for w in ("json", "sse") if any(k[1] == w for k in window)]
    rounds = sorted({k[2] for k in window})

    def med(target, workload, key):
        vals = [window[(target, workload, r)][key] for r in rounds
                if (target, workload, r) in window and window[(target, workload, r)][key] is not None]
        return statistics.median(vals) if vals else None

    def med_ratio(target, base, workload, key):
        vals = []
        for r in rounds:
            a, b = window.get((target, workload, r)), window.get((base, workload, r))
            if a and b and a[key] and b[key]:
                vals.append(a[key] / b[key])
        return statistics.median(vals) if vals else None

    def med_diff(target, base, workload, key):
        vals = per_round_diffs(target, base, workload, key)
        return statistics.median(vals) if vals else None

    def per_round_diffs(target, base, workload, key):
        vals = []
        for r in rounds:
            a, b = window.get((target, workload, r)), window.get((base, workload, r))
            if a and b and a[key] is not None and b[key] is not None:
                vals.append(a[key] - b[key])
        return vals

    def total(target, workload, key):
        return sum(window[(target, workload, r)][key] for r in rounds if (target, workload, r) in window)

    out = []
    out.append(f"### Sluice benchmark ({meta['date']}, commit {meta['commit']})")
    out.append("")
    out.append(
        f"{meta['cpus']} CPUs, loopback, two `sluice mock-upstream` backends ({meta['tokens']} completion "
        f"tokens, no pacing); wrk {meta['connections']} connections / {meta['threads']} threads, "
        f"{meta['rounds']} interleaved rounds of {meta['duration']} s windows per target and workload "
        f"after a {meta['warmup']} s warm-up, medians reported. CPU = utime+stime of the server under "
        f"test from `/proc/PID/stat` (both mocks for *direct*, master+workers for nginx) ÷ requests. "
        f"Ratios are medians of per-round ratios. {meta['nginx_note']}"
    )
    out.append("")
    out.append("| target | workload | req/s | p50 ms | p99 ms | CPU µs/req | CPU × direct | CPU × nginx "
               "| req/s × nginx | mocks' CPU µs/req | non-2xx / socket errors |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for w in workloads:
        for t in targets:
            out.append("| " + " | ".join([
                LABEL[t],
                "JSON chat" if w == "json" else "SSE stream",
                fmt(med(t, w, "rps")),
                fmt(med(t, w, "p50"), 2),
                fmt(med(t, w, "p99"), 2),
                fmt(med(t, w, "cpu"), 1),
                "–" if t == "direct" else ratio(med_ratio(t, "direct", w, "cpu")),
                "–" if t in ("direct", "nginx") or "nginx" not in targets else ratio(med_ratio(t, "nginx", w, "cpu")),
                "–" if t in ("direct", "nginx") or "nginx" not in targets else ratio(med_ratio(t, "nginx", w, "rps")),
                fmt(med(t, w, "mock_cpu"), 1),
                f"{total(t, w, 'non2xx')} / {total(t, w, 'socket')}",
            ]) + " |")
    out.append("")
    if "limits" in targets and "sluice" in targets:
        with_store = any(window[k]["store"] is not None for k in window if k[0] in ("sluice", "limits"))
        out.append(
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
        out.append("")
        out.append("| workload | req/s no limits | req/s limits | req/s × no limits | CPU µs/req no limits "
                   "| CPU µs/req limits | Δ CPU µs/req (range) | CPU × no limits | store commands/req "
                   "| store commands/s, limits / no limits windows |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for w in workloads:
            diffs = per_round_diffs("limits", "sluice", w, "cpu")
            spread = f" ({min(diffs):+.1f} … {max(diffs):+.1f})" if len(diffs) > 1 else ""
            per_req = med("limits", w, "store_per_req")
            out.append("| " + " | ".join([
                "JSON chat" if w == "json" else "SSE stream",
                fmt(med("sluice", w, "rps")),
                fmt(med("limits", w, "rps")),
                ratio(med_ratio("limits", "sluice", w, "rps")),
                fmt(med("sluice", w, "cpu"), 1),
                fmt(med("limits", w, "cpu"), 1),
                signed(med_diff("limits", "sluice", w, "cpu")) + spread,
                ratio(med_ratio("limits", "sluice", w, "cpu")),
                "–" if per_req is None else f"{per_req:.5f}",
                f"{fmt(med('limits', w, 'store_per_s'), 1)} / {fmt(med('sluice', w, 'store_per_s'), 1)}",
            ]) + " |")
        out.append("")
    if "baseline" in targets and "sluice" in targets:
        out.append(
            "A/B: *Sluice* (this build) against *baseline* (another binary, same config and mocks, its own "
            "port), in the same interleaved rounds. Δ and ratios: medians of per-round values (range: lowest "
            f"and highest round). {meta.get('baseline_note', '')}"
        )
        out.append("")
        out.append("| workload | req/s baseline | req/s this build | req/s × baseline | CPU µs/req baseline "
                   "| CPU µs/req this build | Δ CPU µs/req (range) | CPU × baseline | p99 ms baseline / this build |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for w in workloads:
            diffs = per_round_diffs("sluice", "baseline", w, "cpu")
            spread = f" ({min(diffs):+.1f} … {max(diffs):+.1f})" if len(diffs) > 1 else ""
            out.append("| " + " | ".join([
                "JSON chat" if w == "json" else "SSE stream",
                fmt(med("baseline", w, "rps")),
                fmt(med("sluice", w, "rps")),
                ratio(med_ratio("sluice", "baseline", w, "rps")),
                fmt(med("baseline", w, "cpu"), 1),
                fmt(med("sluice", w, "cpu"), 1),
                signed(med_diff("sluice", "baseline", w, "cpu")) + spread,
                ratio(med_ratio("sluice", "baseline", w, "cpu")),
                f"{fmt(med('baseline', w, 'p99'), 2)} / {fmt(med('sluice', w, 'p99'), 2)}",
            ]) + " |")
        out.append("")
    if ttfb:
        base = (ttfb.get("direct") or {}).get("first_p50_us")
        n = max(v["n"] for v in ttfb.values())
        out.append(f"Streaming time to first byte: {n} sequential SSE requests per target, interleaved, "
                   "one keep-alive connection each (python3 http.client), median.")
        out.append("")
        out.append("| target | headers µs | first SSE chunk µs | added vs direct µs | p90 first chunk µs | errors |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        for t in targets:
            v = ttfb.get(t)
            if not v:
                continue
            added = None if t == "direct" or base is None or v["first_p50_us"] is None else v["first_p50_us"] - base
            out.append("| " + " | ".join([
                LABEL[t], fmt(v["head_p50_us"]), fmt(v["first_p50_us"]),
                "–" if added is None else f"{added:+,.0f}", fmt(v["first_p90_us"]), str(v["errors"]),
            ]) + " |")
        out.append("")

    # Checks worth a human's eye.
    notes = []
    for w in workloads:
        for t in targets:
            errs, sock = total(t, w, "non2xx"), total(t, w, "socket")
            if errs or sock:
                notes.append(f"{LABEL[t]} / {w}: {errs} non-2xx responses and {sock} socket errors in measured windows.")
            req, up = total(t, w, "requests"), total(t, w, "upstream")
            # wrk stops counting at the end of its window while a few requests are in flight.
            if up and abs(up - req) > int(meta["connections"]) * len(rounds) * 2:
                notes.append(f"{LABEL[t]} / {w}: mocks saw {up:,} requests for {req:,} completed by wrk.")
    direct_sse = med("direct", "sse", "p50") if "sse" in workloads else None
    if direct_sse is not None and direct_sse > 20:
        notes.append(
            f"SSE windows are latency-bound, not CPU-bound: even called directly, one unpaced stream of "
            f"{meta['tokens']} tokens takes {direct_sse:.0f} ms (p50) on a keep-alive connection, so req/s "
            f"there is about connections ÷ that time for every target, and CPU per request includes idle wake-ups."
        )
    for t, v in ttfb.items():
        if v["errors"]:
            notes.append(f"{LABEL.get(t, t)}: {v['errors']} failed requests in the time-to-first-byte run.")
    notes.extend(meta.get("notes", []))
    if notes:
        out.append("Notes:")
        out.extend(f"- {n}" for n in notes)
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
