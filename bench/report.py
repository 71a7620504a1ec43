#!/usr/bin/env python3
"""Turns one bench/run results directory into docs/benchmarks.md and prints the main table.

Reads values.tsv (scalar values recorded by bench/run) and the JSON files the phases left:
ingest/*.json (bench/post.lua summaries), ingest/durable.json, drain/*.json and smtp/drain-*.json
(bench/drain_watch.py), smtp/ceiling.json (bench/smtp_ceiling.py), rate/rate.json
(bench/rate_analysis.py: rate.json for one mailroom worker, mailroom-3.json for three on PostgreSQL
and Redis, celery-3.json for the Celery baseline). Also writes summary.json beside them. The scale-out section that
bench/scale_report.py put in the file, if any, is kept.
"""

import argparse
import json
import os
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def values(results):
    out = {}
    with open(os.path.join(results, "values.tsv")) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            if key == "check_failed":
                out.setdefault("checks_failed", []).append(value)
            else:
                out[key] = value
    return out


def num(v, default=None):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def fmt(x, digits=0):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def ms(us):
    return None if us is None else us / 1000


def verdict(ok):
    if ok is None:
        return "n/a"
    return "**pass**" if ok else "**FAIL**"


# The ingest targets of bench/run, in the order it alternates them, with their labels.
TARGETS = {
    "hello": "bare axum hello-world",
    "sqlite-ceiling": "SQLite ceiling (bare axum, each body group-committed to a one-table SQLite)",
    "mailroom": "`mailroom api` (SQLite, embedded)",
    "fastapi-sqlite": "FastAPI + SQLite",
    "mailroom-sqs": "`mailroom api`, `QUEUE_BACKEND=sqs` (moto)",
    "fastapi-sqs": "FastAPI + SQS (boto3, moto)",
}
# Which baseline each mailroom target is compared with.
PAIRS = (("mailroom", "fastapi-sqlite"), ("mailroom-sqs", "fastapi-sqs"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--doc", required=True)
    p.add_argument("--svg", help="the send-rate plot bench/plot_rate.py wrote (linked from the doc)")
    a = p.parse_args()
    r = a.results
    v = values(r)
    runs = int(v.get("runs", 3))
    connections = int(v.get("connections", 64))
    threads = int(v.get("threads", 2))
    duration = int(v.get("duration", 10))
    rate_target = num(v.get("rate"), 7.0)
    window = num(v.get("rate_window"), 30.0)

    # Ingest.
    ingest = {}
    for target in TARGETS:
        rows = [load(os.path.join(r, "ingest", f"{target}-{i}.json")) for i in range(1, runs + 1)]
        rows = [x for x in rows if x]
        ingest[target] = {
            "runs": rows,
            "rps": statistics.median(x["rps"] for x in rows) if rows else None,
            "p50_ms": statistics.median(ms(x["latency_us"]["p50"]) for x in rows) if rows else None,
            "p99_ms": statistics.median(ms(x["latency_us"]["p99"]) for x in rows) if rows else None,
        }
    hello, mail = ingest["hello"], ingest["mailroom"]
    high = v.get("high_connections", "256")

    def median_of(values):
        values = [x for x in values if x is not None]
        return statistics.median(values) if values else None

    # How busy the whole machine was during each target's runs (wrk and everything else included).
    busy = {
        name: median_of(num(v.get(f"ingest_{name}-{i}_machine_busy_pct")) for i in range(1, runs + 1))
        for name in ("hello", "sqlite-ceiling", "mailroom", f"hello-c{high}", f"mailroom-c{high}")
    }
    # The same two targets at the higher connection count (diagnostic).
    at_high = {}
    for target in ("hello", "mailroom"):
        rows = [load(os.path.join(r, "ingest", f"{target}-c{high}-{i}.json")) for i in range(1, runs + 1)]
        rows = [x for x in rows if x]
        at_high[target] = {
            "rps": median_of(x["rps"] for x in rows),
            "p99_ms": median_of(ms(x["latency_us"]["p99"]) for x in rows),
        }
    high_ratio = (
        at_high["mailroom"]["rps"] / at_high["hello"]["rps"]
        if at_high["mailroom"]["rps"] and at_high["hello"]["rps"]
        else None
    )
    ratio = mail["rps"] / hello["rps"] if hello["rps"] and mail["rps"] else None
    sqlite_ceiling = ingest["sqlite-ceiling"]
    of_ceiling = mail["rps"] / sqlite_ceiling["rps"] if sqlite_ceiling["rps"] and mail["rps"] else None
    durable = load(os.path.join(r, "ingest", "durable.json")) or {}
    for t in ingest.values():
        t["non2xx"] = sum(
            n for run in t["runs"] for status, n in run["statuses"].items() if status not in ("200", "202")
        )
        t["socket_errors"] = sum(n for run in t["runs"] for n in run["errors"].values())
    non2xx = hello["non2xx"] + mail["non2xx"]
    socket_errors = hello["socket_errors"] + mail["socket_errors"]
    # The baselines and the SQS target: CPU per request of the process tree (and of moto), memory
    # of the tree, where every 202 was found.
    for name, t in ingest.items():
        per, moto = [], []
        for i, x in enumerate(t["runs"], 1):
            if x["requests"]:
                per.append(num(v.get(f"ingest_{name}-{i}_server_cpu_s"), 0) / x["requests"] * 1e6)
                if v.get(f"ingest_{name}-{i}_moto_cpu_s") is not None:
                    moto.append(num(v.get(f"ingest_{name}-{i}_moto_cpu_s"), 0) / x["requests"] * 1e6)
        t["cpu_us"] = statistics.median(per) if per else None
        t["moto_cpu_us"] = statistics.median(moto) if moto else None
        t["moto_cpu_pct"] = None
        if moto:
            shares = [num(v.get(f"ingest_{name}-{i}_moto_cpu_s"), 0) / (x["duration_us"] / 1e6) * 100
                      for i, x in enumerate(t["runs"], 1) if x["duration_us"]]
            t["moto_cpu_pct"] = statistics.median(shares) if shares else None
        t["rss_kib"] = num(v.get(f"ingest_{name}_after_rss_kib"))
        t["pss_kib"] = num(v.get(f"ingest_{name}_after_pss_kib"))
        t["start_rss_kib"] = num(v.get(f"ingest_{name}_start_rss_kib"))
        t["processes"] = v.get(f"ingest_{name}_processes")
    durability = {
        "mailroom": durable,
        "mailroom-sqs": load(os.path.join(r, "ingest", "durable-mailroom-sqs.json")) or {},
        "mailroom-sqs-store": load(os.path.join(r, "ingest", "durable-mailroom-sqs-store.json")) or {},
        "fastapi-sqlite": load(os.path.join(r, "ingest", "durable-fastapi-sqlite.json")) or {},
        "fastapi-sqs": load(os.path.join(r, "ingest", "durable-fastapi-sqs.json")) or {},
    }
    pair_ratio = {
        (m, b): ingest[m]["rps"] / ingest[b]["rps"] if ingest[m]["rps"] and ingest[b]["rps"] else None
        for m, b in PAIRS
    }
    hello_ratio = {
        name: t["rps"] / hello["rps"] if t["rps"] and hello["rps"] else None for name, t in ingest.items()
    }
    ceiling_ratio = hello_ratio["sqlite-ceiling"]

    # Drains without delivery.
    drain_runs = int(v.get("drain_runs", 3))
    drains = {}
    for variant in ("archive", "noarchive"):
        rows = [load(os.path.join(r, "drain", f"{variant}-{i}.json")) for i in range(1, drain_runs + 1)]
        rows = [x for x in rows if x]
        drains[variant] = {
            "runs": rows,
            "rate": statistics.median(x["rate_per_s"] or 0 for x in rows) if rows else None,
            "steady": statistics.median(x["steady_rate_per_s"] or 0 for x in rows) if rows else None,
            "rss_kib": statistics.median(x["rss_kib"] or 0 for x in rows) if rows else None,
            "hwm_kib": max((x["hwm_kib"] or 0 for x in rows), default=None),
        }

    # SMTP.
    ceiling = load(os.path.join(r, "smtp", "ceiling.json")) or {}
    probe = load(os.path.join(r, "smtp", "write-probe.json")) or {}
    smtp = {c: load(os.path.join(r, "smtp", f"drain-c{c}.json")) or {} for c in (32, 256)}
    sink = {c: load(os.path.join(r, "smtp", f"sink-c{c}.json")) or {} for c in (32, 256)}

    def cpu_share(key, seconds):
        cpu = num(v.get(key))
        return cpu / seconds * 100 if cpu is not None and seconds else None

    ceiling_relay_pct = cpu_share("smtp_ceiling_relay_cpu_s", ceiling.get("seconds"))
    smtp_relay_pct = {c: cpu_share(f"smtp_drain-c{c}_relay_cpu_s", smtp[c].get("seconds")) for c in smtp}
    smtp_worker_pct = {c: cpu_share(f"smtp_drain-c{c}_worker_cpu_s", smtp[c].get("seconds")) for c in smtp}
    sink_relay_pct = {c: cpu_share(f"smtp_sink-c{c}_relay_cpu_s", sink[c].get("seconds")) for c in sink}
    sink_worker_pct = {c: cpu_share(f"smtp_sink-c{c}_worker_cpu_s", sink[c].get("seconds")) for c in sink}

    rate = load(os.path.join(r, "rate", "rate.json")) or {}
    rate3 = load(os.path.join(r, "rate", "mailroom-3.json")) or {}
    celery = load(os.path.join(r, "rate", "celery-3.json")) or {}
    rate_workers = int(num(v.get("rate_workers"), 3))
    rate_ok = None
    rate_err = None
    if rate.get("interval_rate_per_s") is not None:
        # The mean spacing is the achieved rate; the count in the window also holds the burst.
        rate_err = (rate["interval_rate_per_s"] - rate_target) / rate_target * 100
        rate_ok = (
            abs(rate_err) <= 1.0
            and rate["max_in_1s"] <= rate_target + 1
            and rate["in_window"] <= rate_target * window + 1
            and rate.get("covered_s", 0) >= window
        )
    rate3_ok = None
    rate3_err = None
    if rate3.get("interval_rate_per_s") is not None:
        # Several workers sharing one GCRA through Redis: the mean may fall a little below the
        # ceiling (reservations a worker could not use at once), never above it.
        rate3_err = (rate3["interval_rate_per_s"] - rate_target) / rate_target * 100
        rate3_ok = (
            rate_target * 0.95 <= rate3["interval_rate_per_s"] <= rate_target * 1.01
            and rate3["max_in_1s"] <= rate_target + 1
            and rate3["in_window"] <= rate_target * window + 1
            and rate3.get("covered_s", 0) >= window
            and rate3.get("duplicates") == 0
        )
    celery_over = None
    if celery.get("rate_per_s") is not None:
        celery_over = celery["rate_per_s"] / rate_target
    per_worker = {
        "mailroom-3": [v.get(f"rate_mailroom3_worker_{i}_delivered", "n/a") for i in range(1, rate_workers + 1)],
        "celery-3": [v.get(f"rate_celery3_worker_{i}_delivered", "n/a") for i in range(1, rate_workers + 1)],
    }

    idle_rss = num(v.get("serve_idle_rss_kib"))
    idle_hwm = num(v.get("serve_idle_hwm_kib"))
    mib = lambda kib: None if kib is None else kib / 1024  # noqa: E731

    table = []
    row = table.append
    row(("Ingest `POST /api/email`, `mailroom api`", f"{fmt(mail['rps'])} req/s; p50 {fmt(mail['p50_ms'], 2)} ms, p99 {fmt(mail['p99_ms'], 2)} ms", "", ""))
    row(("Ingest, bare axum hello-world (same wrk, same body)", f"{fmt(hello['rps'])} req/s; p50 {fmt(hello['p50_ms'], 2)} ms, p99 {fmt(hello['p99_ms'], 2)} ms", "", ""))
    row(("Ingest ratio mailroom / hello-world", fmt(ratio, 3), "≥ 0.5", verdict(None if ratio is None else ratio >= 0.5)))
    row((
        "Ingest, SQLite ceiling (diagnostic: each body committed as it is to a one-table SQLite by group "
        "commit before its 202; no parsing, no middleware): its ratio to the hello-world; mailroom's share of it",
        f"{fmt(sqlite_ceiling['rps'])} req/s: {fmt(ceiling_ratio, 3)} of the hello-world; mailroom reaches "
        f"{fmt(of_ceiling, 2)} of it",
        "",
        "",
    ))
    row((
        "Machine CPU busy during the ingest runs (all processes, wrk included): mailroom / SQLite ceiling / hello-world",
        f"{fmt(busy['mailroom'])}% / {fmt(busy['sqlite-ceiling'])}% / {fmt(busy['hello'])}%",
        "",
        "",
    ))
    row((
        f"Ingest at {high} connections (diagnostic): mailroom / hello-world",
        f"{fmt(at_high['mailroom']['rps'])} / {fmt(at_high['hello']['rps'])} req/s (ratio {fmt(high_ratio, 3)}); "
        f"p99 {fmt(at_high['mailroom']['p99_ms'], 2)} / {fmt(at_high['hello']['p99_ms'], 2)} ms; "
        f"machine busy {fmt(busy[f'mailroom-c{high}'])}% / {fmt(busy[f'hello-c{high}'])}%",
        "",
        "",
    ))
    row((
        "Every 202 durable (ids answered 202 found in SQLite after the API stopped)",
        f"{fmt(durable.get('accepted_202'))} × 202, {fmt(durable.get('rows'))} rows, {fmt(durable.get('missing'))} missing; "
        f"{non2xx} non-2xx, {socket_errors} socket errors",
        "0 missing, 0 non-2xx",
        verdict(durable.get("ok") and non2xx == 0 and socket_errors == 0 if durable else None),
    ))
    for m, b in PAIRS:
        mt, bt = ingest[m], ingest[b]
        row((f"Ingest, {TARGETS[b]} baseline (same wrk, same body)",
             f"{fmt(bt['rps'])} req/s; p50 {fmt(bt['p50_ms'], 2)} ms, p99 {fmt(bt['p99_ms'], 2)} ms", "", ""))
        if m != "mailroom":
            row((f"Ingest, {TARGETS[m]}",
                 f"{fmt(mt['rps'])} req/s; p50 {fmt(mt['p50_ms'], 2)} ms, p99 {fmt(mt['p99_ms'], 2)} ms", "", ""))
        pr = pair_ratio[(m, b)]
        row((f"Ingest ratio {TARGETS[m]} / {TARGETS[b]}", f"{fmt(pr, 2)} ×", "", ""))
    row((
        "Every 202 of the SQS target and of the baselines durable (found in the queue or database it was answered for)",
        "; ".join(
            f"{label}: {fmt(d.get('accepted_202'))} × 202, {fmt(num(d.get('drained', d.get('rows'))))} stored"
            + (f", {fmt(d.get('missing'))} missing" if "missing" in d else "")
            for label, d in (("mailroom SQS (queue)", durability["mailroom-sqs"]),
                             ("FastAPI + SQLite", durability["fastapi-sqlite"]),
                             ("FastAPI + SQS", durability["fastapi-sqs"]))
        ) + f"; {sum(ingest[t]['non2xx'] for t in ('mailroom-sqs', 'fastapi-sqlite', 'fastapi-sqs'))} non-2xx; "
        f"socket errors: mailroom SQS {ingest['mailroom-sqs']['socket_errors']}, baselines "
        f"{ingest['fastapi-sqlite']['socket_errors']} / {ingest['fastapi-sqs']['socket_errors']} (answers slower than wrk's 2 s)",
        "0 missing, 0 non-2xx",
        verdict(
            all(durability[k].get("ok") for k in ("mailroom-sqs", "mailroom-sqs-store", "fastapi-sqlite", "fastapi-sqs"))
            and all(ingest[t]["non2xx"] == 0 for t in ("mailroom-sqs", "fastapi-sqlite", "fastapi-sqs"))
            if durability["fastapi-sqs"] else None
        ),
    ))
    row((
        f"Drain `DELIVERY=none`, archive on ({fmt(num(v.get('drain_n')))} msgs, concurrency {v.get('drain_concurrency')})",
        f"{fmt(drains['archive']['rate'])} msg/s (steady {fmt(drains['archive']['steady'])})",
        "≥ 10,000/s",
        verdict(None if drains["archive"]["rate"] is None else drains["archive"]["rate"] >= 10000),
    ))
    row((
        "Drain `DELIVERY=none`, `ARCHIVE_URL=none` (queue and store only; diagnostic)",
        f"{fmt(drains['noarchive']['rate'])} msg/s (steady {fmt(drains['noarchive']['steady'])})",
        "",
        "",
    ))
    for c in (32, 256):
        s = sink[c]
        row((
            f"Drain over SMTP to a local relay (postfix's smtp-sink), no rate limit, archive on "
            f"({fmt(num(v.get('smtp_sink_n')))} msgs, concurrency {c})",
            f"{fmt(s.get('rate_per_s'))} msg/s (steady {fmt(s.get('steady_rate_per_s'))}); "
            f"relay CPU {fmt(sink_relay_pct[c])}% of a core",
            "≥ 2,000/s",
            verdict(None if s.get("rate_per_s") is None else s["rate_per_s"] >= 2000),
        ))
    for c in (32, 256):
        s = smtp[c]
        row((
            f"Drain over SMTP to the aiosmtpd test relay, no rate limit ({fmt(num(v.get('smtp_n')))} msgs, "
            f"concurrency {c}; relay-bound, diagnostic)",
            f"{fmt(s.get('rate_per_s'))} msg/s (steady {fmt(s.get('steady_rate_per_s'))}); relay CPU {fmt(smtp_relay_pct[c])}% of a core",
            "",
            "",
        ))
    row((
        f"Relay ceiling: Python smtplib, {v.get('ceiling_connections')} connections, same relay",
        f"{fmt(ceiling.get('rate_per_s'))} msg/s; relay CPU {fmt(ceiling_relay_pct)}% of a core",
        "",
        "",
    ))
    row((
        "One SMTP connection to the relay, ms per message: body and `.` terminator in two writes without "
        "TCP_NODELAY (lettre's pattern) / in one write (smtplib's) / two writes with TCP_NODELAY",
        f"{fmt(probe.get('two_writes_nagle_ms'), 1)} / {fmt(probe.get('one_write_nagle_ms'), 1)} / "
        f"{fmt(probe.get('two_writes_nodelay_ms'), 1)} ms",
        "",
        "",
    ))
    row((
        f"Send rate at `SEND_RATE_PER_SECOND={fmt(rate_target)}`, over {fmt(window)} s at the relay",
        f"{fmt(rate.get('interval_rate_per_s'), 3)}/s mean spacing (error {fmt(rate_err, 2)}%); "
        f"{rate.get('in_window', 'n/a')} msgs in the {fmt(window)} s after the first; "
        f"max {rate.get('max_in_1s', 'n/a')} in any 1 s",
        f"within 1%; ≤ {fmt(rate_target * window + 1)} in {fmt(window)} s and ≤ {fmt(rate_target + 1)} in any 1 s "
        "(rate × time + burst 1)",
        verdict(rate_ok),
    ))
    row((
        f"Send rate, {rate_workers} `mailroom worker` processes on PostgreSQL sharing the ceiling through Redis, "
        f"over {fmt(window)} s at the relay",
        f"{fmt(rate3.get('interval_rate_per_s'), 3)}/s mean spacing (error {fmt(rate3_err, 2)}%); "
        f"{rate3.get('in_window', 'n/a')} msgs in the {fmt(window)} s after the first; "
        f"max {rate3.get('max_in_1s', 'n/a')} in any 1 s; per worker {' / '.join(per_worker['mailroom-3'])}; "
        f"{rate3.get('duplicates', 'n/a')} received twice",
        f"mean ≤ {fmt(rate_target)}/s (+1%) and ≥ 95% of it; ≤ {fmt(rate_target * window + 1)} in {fmt(window)} s "
        f"and ≤ {fmt(rate_target + 1)} in any 1 s; none twice",
        verdict(rate3_ok),
    ))
    row((
        f"Send rate, Celery baseline: {rate_workers} workers, `rate_limit=\"{fmt(rate_target)}/s\"`, "
        f"over {fmt(window)} s at the relay",
        f"{fmt(celery.get('rate_per_s'), 2)}/s ({fmt(celery_over, 2)} × the ceiling); "
        f"{celery.get('in_window', 'n/a')} msgs in the {fmt(window)} s after the first; "
        f"max {celery.get('max_in_1s', 'n/a')} in any 1 s; per worker {' / '.join(per_worker['celery-3'])}; "
        f"{celery.get('duplicates', 'n/a')} received twice",
        "(baseline: the same ceiling of 7/s is the intent)",
        "",
    ))
    row(("Memory, `mailroom serve` idle after start", f"{fmt(mib(idle_rss), 1)} MiB RSS (peak {fmt(mib(idle_hwm), 1)} MiB)", "≤ 20 MiB", verdict(None if idle_rss is None else idle_rss <= 20 * 1024)))
    row((
        "Memory, worker at the end of the `DELIVERY=none` drain",
        f"{fmt(mib(drains['archive']['rss_kib']), 1)} MiB RSS (peak {fmt(mib(drains['archive']['hwm_kib']), 1)} MiB)",
        "",
        "",
    ))
    row((
        "Memory, worker at the end of the SMTP drains (concurrency 32 / 256)",
        " / ".join(f"{fmt(mib(smtp[c].get('rss_kib')), 1)} MiB" for c in (32, 256)),
        "",
        "",
    ))
    row((
        "Memory, `mailroom api` after the ingest load",
        f"{fmt(mib(num(v.get('api_after_ingest_rss_kib'))), 1)} MiB RSS (peak {fmt(mib(num(v.get('api_after_ingest_hwm_kib'))), 1)} MiB)",
        "",
        "",
    ))
    row((
        "Memory after the ingest load, mailroom against the baselines: RSS summed over the process tree (PSS)",
        "; ".join(
            f"{TARGETS[t]} ({ingest[t]['processes'] or 'n/a'} processes): {fmt(mib(ingest[t]['rss_kib']), 1)} MiB "
            f"({fmt(mib(ingest[t]['pss_kib']), 1)})"
            for t in ("mailroom", "fastapi-sqlite", "mailroom-sqs", "fastapi-sqs")
        ),
        "",
        "",
    ))
    row((
        "Memory of the senders at the end of the rate runs: RSS summed (PSS)",
        f"1 mailroom worker: {fmt(mib(num(v.get('rate_mailroom1_rss_kib'))), 1)} MiB "
        f"({fmt(mib(num(v.get('rate_mailroom1_pss_kib'))), 1)}); "
        f"{rate_workers} mailroom workers: {fmt(mib(num(v.get('rate_mailroom3_rss_kib'))), 1)} MiB "
        f"({fmt(mib(num(v.get('rate_mailroom3_pss_kib'))), 1)}); "
        f"{rate_workers} Celery workers ({v.get('rate_celery3_processes', 'n/a')} processes): "
        f"{fmt(mib(num(v.get('rate_celery3_rss_kib'))), 1)} MiB ({fmt(mib(num(v.get('rate_celery3_pss_kib'))), 1)})",
        "",
        "",
    ))

    def md_table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(str(c) for c in r_) + " |" for r_ in rows]
        return "\n".join(lines)

    main_table = md_table(("measure", f"result (median of {runs} ingest / {drain_runs} drain runs)", "target", "verdict"), table)

    ingest_rows = []
    for i in range(runs):
        for name, t in ((label, ingest[key]) for key, label in TARGETS.items()):
            if i < len(t["runs"]):
                x = t["runs"][i]
                ingest_rows.append((
                    i + 1, name, fmt(x["rps"]), fmt(ms(x["latency_us"]["p50"]), 2), fmt(ms(x["latency_us"]["p90"]), 2),
                    fmt(ms(x["latency_us"]["p99"]), 2), fmt(ms(x["latency_us"]["max"]), 1),
                    ", ".join(f"{k}: {n:,}" for k, n in sorted(x["statuses"].items()))
                    + "".join(f"; {n:,} {k} errors" for k, n in x["errors"].items() if n),
                ))
    # mailroom against the stacks users would pick instead.
    comparison_rows = []
    for key, label in TARGETS.items():
        t = ingest[key]
        against = []
        if key == "hello":
            against.append("")
        for m, b in PAIRS:
            if key == b:
                against.append(f"{fmt(pair_ratio[(m, b)], 2)} × (mailroom {'on SQS' if 'sqs' in m else 'embedded'})")
        procs = t["processes"] or "n/a"
        comparison_rows.append((
            label, fmt(t["rps"]), fmt(t["p50_ms"], 2), fmt(t["p99_ms"], 2), fmt(t["cpu_us"]),
            fmt(t["moto_cpu_us"]) if t["moto_cpu_us"] is not None else "",
            fmt(hello_ratio[key], 3), "; ".join(a_ for a_ in against if a_),
            f"{fmt(mib(t['rss_kib']), 1)} ({fmt(mib(t['pss_kib']), 1)}); {procs}",
        ))
    rate_rows = []
    for label, x, workers in (
        ("mailroom, 1 worker (SQLite)", rate, ["n/a"]),
        (f"mailroom, {rate_workers} workers (PostgreSQL + Redis)", rate3, per_worker["mailroom-3"]),
        (f"Celery, {rate_workers} workers (Redis broker)", celery, per_worker["celery-3"]),
    ):
        rate_rows.append((
            label, fmt(x.get("interval_rate_per_s"), 3), x.get("in_window", "n/a"), fmt(x.get("rate_per_s"), 2),
            x.get("max_in_1s", "n/a"), x.get("max_in_10s", "n/a"), fmt(x.get("min_gap_ms"), 1),
            x.get("duplicates", "n/a"), " / ".join(workers),
        ))
    drain_rows = []
    for variant, label in (("archive", "archive on"), ("noarchive", "ARCHIVE_URL=none")):
        for i, x in enumerate(drains[variant]["runs"], 1):
            drain_rows.append((
                label, i, fmt(x["rate_per_s"]), fmt(x["steady_rate_per_s"]), fmt(x["seconds"], 2),
                fmt(num(v.get(f"drain_{variant}_{i}_preload_per_s"))), v.get(f"busy_before_drain_{variant}_{i}", "n/a"),
                fmt(mib(x["rss_kib"]), 1), fmt(x.get("max_poll_ms")),
            ))
    smtp_rows = []
    for c in (32, 256):
        s = smtp[c]
        smtp_rows.append((
            c, fmt(s.get("rate_per_s")), fmt(s.get("steady_rate_per_s")), fmt(s.get("seconds"), 2),
            v.get(f"smtp_drain_c{c}_sink", "n/a"), v.get(f"smtp_drain-c{c}_leases_expired", "n/a"),
            v.get(f"smtp_drain-c{c}_listen_overflows", "n/a"),
            fmt(smtp_worker_pct[c]), fmt(smtp_relay_pct[c]),
        ))
    sink_rows = []
    for c in (32, 256):
        s = sink[c]
        sink_rows.append((
            c, fmt(s.get("rate_per_s")), fmt(s.get("steady_rate_per_s")), fmt(s.get("seconds"), 2),
            v.get(f"smtp_sink_c{c}_received", "n/a"), v.get(f"smtp_sink-c{c}_leases_expired", "n/a"),
            fmt(sink_worker_pct[c]), fmt(sink_relay_pct[c]), fmt(mib(s.get("rss_kib")), 1),
        ))

    notes = []
    if ratio is not None:
        notes.append(
            f"Ingest: mailroom answers {fmt(mail['rps'])} req/s against {fmt(hello['rps'])} for a handler that does nothing "
            f"(ratio {ratio:.3f}). Both share the machine's {v.get('nproc')} cores with wrk itself; each mailroom request "
            "parses and validates the JSON, builds and serialises the message, and waits for its SQLite group commit "
            "(WAL, `synchronous=FULL`) before the 202. Where a request's CPU goes, from a frame-pointer build "
            "under this load (`perf record -g`, 5 s at 33k req/s, 2026-11-22): about 11 µs on sqlx's SQLite thread "
            "(WAL writes 1.9, fsync 1.4, page reads 1.2, b-tree inserts and page splits 1.9, the JSON functions "
            "1.5, the rest SQLite's VDBE and commit), 6 µs in the kernel's socket send and receive, 3 µs in hyper, "
            "and about 13 µs in mailroom's own request path (routing and the layers 3.4, JSON parse 1.6, message "
            "and row encoding 1.7, the hand-off to the single writer and back 3.3, the rest the handler and "
            "tokio's scheduling): 33 µs in all, against about 10 µs for the hello-world. The history of that "
            "path: with glibc's malloc the allocator alone took about a fifth of the samples; mimalloc (the "
            "binary's allocator since then) raised the rate by about a third in a same-session trial "
            "(16,146 → 21,204 req/s). A batch of acceptances reaches SQLite in one round trip to sqlx's "
            "database thread (BEGIN, the three inserts and COMMIT as one statement list, instead of five round "
            "trips), with its rows encoded by the requests rather than by the single writer, and read with "
            "`jsonb_each`: in same-session trials (4 alternated runs of `wrk -t2 -c64 -d8s` each) the median went "
            "from about 20,100 to 23,200 req/s for the round trips, and the SQLite thread's CPU per message from "
            "13.6 to 10.2 µs for `jsonb_each`. A message's `accepted` event is read from its row instead of being "
            "stored as an event row (one table and one index insert fewer per message): 25,800 → 28,700 req/s. "
            "Then the HTTP layers: `Router::layer` wraps every route in every layer, so each request cloned a "
            "boxed service per layer; the layers are now stacked once around the router, the request metrics "
            "keep their registered handles instead of building and hashing their labels each time, message rows "
            "are serialised from borrowed fields rather than through a `json!` value, and the compat handler no "
            "longer copies the request's headers: server CPU per request 41 → 33 µs and 29,100 → 33,600 req/s "
            "(medians of 4 alternated trials)."
        )
    if ceiling_ratio is not None and of_ceiling is not None:
        notes.append(
            f"The SQLite ceiling (`examples/sqlite_ceiling.rs`) bounds any ingest that answers only after a SQLite "
            "commit on this machine. It hands each request's body, unparsed, to one writer task that commits "
            "whatever is waiting as one transaction into a one-table database (the same sqlx statement list per "
            f"batch, WAL, `synchronous=FULL`), and answers 202. It reaches {fmt(sqlite_ceiling['rps'])} req/s, "
            f"{ceiling_ratio:.3f} of the hello-world, with the machine {fmt(busy['sqlite-ceiling'])}% busy; mailroom "
            f"reaches {of_ceiling:.2f} of it. So the 0.5 target is above what SQLite through sqlx does here with "
            "nothing else to do. What bounds the ceiling is the single writer's serial commits, not the fsync: in "
            "same-session trials of the same server (2026-11-22, `wrk -t2 -c64 -d8s`, 2 alternated rounds) "
            "`synchronous=NORMAL` made no difference (57,500 and 61,400 req/s against 56,200 and 61,100). With "
            "mailroom's schema instead of one table (the message row and its status index, the queue row and its "
            "due index: four b-trees) it did about 47,000 against 61,000; a file appended to and `fdatasync`ed "
            "once per batch by a dedicated thread, in place of SQLite, did about 86,000, 0.63 of the hello-world "
            "in those trials."
        )
    cpu_us = {}
    for target, t in (("hello", hello), ("mailroom", mail)):
        per = [
            num(v.get(f"ingest_{target}-{i}_server_cpu_s"), 0) / x["requests"] * 1e6
            for i, x in enumerate(t["runs"], 1)
            if x["requests"]
        ]
        cpu_us[target] = statistics.median(per) if per else None
    if cpu_us["hello"] and cpu_us["mailroom"]:
        notes.append(
            f"Ingest CPU: the server process spent {cpu_us['mailroom']:.0f} µs of CPU per request in mailroom against "
            f"{cpu_us['hello']:.0f} µs in the hello-world (median over runs)."
            + (
                f" The machine was only {fmt(busy['mailroom'])}% busy during mailroom's runs (against "
                f"{fmt(busy['hello'])}% for the hello-world), so CPU is not what bounds mailroom's rate at "
                f"{v.get('connections')} connections: each request waits for the SQLite group commit that holds it, "
                "one write transaction at a time, and the requests in flight bound how many share one. At "
                f"{high} connections commits are bigger and mailroom answers {fmt(at_high['mailroom']['rps'])} req/s "
                f"(ratio {fmt(high_ratio, 3)}). In a separate trial at 64 connections (25k req/s, before the "
                "`accepted` event came from the message row) commits held about 26 messages each and came every "
                "0.76 ms; sqlx's SQLite thread ran 0.31 ms of that and wrote about 20 WAL pages (6 of the "
                "`messages` table, 3 each of the queue and the two indexes, 4 of events and their index). "
                "The threads' scheduler statistics (`/proc/<pid>/task/*/schedstat`) "
                "show where the rest goes: each of the three busy threads spent about as long waiting to run "
                "as running (the two tokio workers 2.7 s each of the 8 s, the SQLite thread 1.3 s), 35–55 µs "
                "per wake-up on this virtual machine, and every commit passes the work between threads "
                "several times. Letting a separate connection run the WAL checkpoints instead of the writer "
                "made no difference (and let the WAL grow to 1 GB), so it was not kept."
                if busy["mailroom"] is not None and busy["mailroom"] < 85
                else ""
            )
        )
    if drains["archive"]["rate"] and drains["noarchive"]["rate"]:
        notes.append(
            f"Drain: with the local archive on, the worker settles {fmt(drains['archive']['rate'])} msg/s; with "
            f"`ARCHIVE_URL=none` it settles {fmt(drains['noarchive']['rate'])} msg/s, so the difference is the cost of "
            "writing one archive file per message (all of one day's messages go to one directory)."
        )
        split = []
        for variant in ("archive", "noarchive"):
            total = [num(v.get(f"drain_{variant}-{i}_worker_cpu_s")) for i in range(1, drain_runs + 1)]
            kernel = [num(v.get(f"drain_{variant}-{i}_worker_sys_cpu_s")) for i in range(1, drain_runs + 1)]
            pairs = [(t, k) for t, k in zip(total, kernel) if t is not None and k is not None]
            if pairs:
                split.append((variant, statistics.median(k for _, k in pairs), statistics.median(t for t, _ in pairs)))
        if len(split) == 2:
            (_, ka, ta), (_, kn, tn) = split
            notes.append(
                f"Drain CPU: per {fmt(num(v.get('drain_n')))} messages the worker used {ta:.1f} s of CPU with the archive "
                f"on, {ka:.1f} s of it in the kernel, against {tn:.1f} s ({kn:.1f} s in the kernel) with "
                "`ARCHIVE_URL=none` (medians). The archive's kernel time is file creation and rename in one "
                "directory by up to 8 blocking threads at once (`LOCAL_WRITERS` in `src/archive.rs`); it has varied "
                "between runs on this machine (see the drain table for each one). It depends on the state of the "
                "file system more than on mailroom: on 2026-11-22, after a day of benchmark runs had created and "
                "deleted a few million archive files, the same binary drained 50,000 messages with the archive on "
                "at anywhere from 2,700 to 10,100 msg/s in back-to-back trials, using 10 to 33 s of CPU, and so did "
                "the binary of the day before. A system-wide `perf record` of such a drain had 27% of samples in "
                "`rwsem_spin_on_owner` (the directory's lock), 15% in `find_get_block_common` and 5% in ext4's "
                "`recently_deleted` (inode allocation stepping over recently freed inodes); with 2 writers "
                "instead of 8 it was no better. Two hours later, with no change to the archive, the same trial "
                "on the same file system drained 13,400 and 14,700 msg/s (and about 10,000 on a freshly made "
                "ext4 on a loop device, which adds its own layer)."
            )
    if ceiling.get("rate_per_s") and smtp[32].get("rate_per_s"):
        notes.append(
            f"SMTP relay: the relay is one Python process. A lean Python client ({v.get('ceiling_connections')} "
            f"connections, one process each) gets {fmt(ceiling.get('rate_per_s'))} msg/s through it with the relay at "
            f"{fmt(ceiling_relay_pct)}% of a core; on {v.get('nproc')} cores the client processes compete with the "
            "relay, so its real ceiling is at least that. During mailroom's drains the relay used "
            f"{fmt(smtp_relay_pct[32])}% (concurrency 32) and {fmt(smtp_relay_pct[256])}% (256) of a core; "
            f"mailroom's {fmt(smtp[32].get('rate_per_s'))} msg/s at concurrency 32"
            + (
                " is well below that, so the relay is not what holds it back."
                if smtp[32]["rate_per_s"] < 0.8 * ceiling["rate_per_s"]
                else " is close to that, so the relay may be what limits it."
            )
        )
    slow = probe.get("two_writes_nagle_ms")
    if slow and probe.get("one_write_nagle_ms"):
        notes.append(
            f"SMTP client: on one connection a message costs {slow:.1f} ms when the body and the final "
            f"`\\r\\n.\\r\\n` go out as two writes without TCP_NODELAY (lettre 0.11's own transport), against "
            f"{probe['one_write_nagle_ms']:.1f} ms in one write and {fmt(probe.get('two_writes_nodelay_ms'), 1)} ms with "
            "TCP_NODELAY: Nagle's algorithm holds the terminator until the relay acknowledges the body, and the "
            "relay delays that acknowledgement. mailroom opens its SMTP connections itself with TCP_NODELAY "
            "(`src/delivery/smtp/session.rs`), so the client is no longer what limits a drain: the single-process relay, "
            f"at {fmt(smtp_relay_pct[32])}% of a core during the concurrency-32 drain, is. Against it mailroom sends "
            "faster than the Python client does."
        )
    if sink[32].get("rate_per_s"):
        notes.append(
            f"SMTP drain against a relay that keeps up: postfix's smtp-sink (C, event-driven, discards what it "
            f"receives; postfix {v.get('smtp_sink_postfix', 'n/a')}) used {fmt(sink_relay_pct[32])}% of a core while "
            f"mailroom sent {fmt(sink[32].get('rate_per_s'))} msg/s to it at concurrency 32, with the worker at "
            f"{fmt(sink_worker_pct[32])}% of a core, archive and SQLite bookkeeping included. The binary is taken "
            "out of the Debian package by `start_smtp_sink` in `scripts/servers.sh`; no mail daemon is installed."
        )
    expired = num(v.get("smtp_drain-c256_leases_expired"), 0) + num(v.get("smtp_drain-c32_leases_expired"), 0)
    if expired:
        notes.append(
            f"SMTP: {int(expired)} delivery task(s) never finished (the kernel dropped "
            f"{v.get('smtp_drain-c256_listen_overflows', 'n/a')} connections from the relay's full listen queue during "
            "the concurrency-256 drain, and lettre has no read timeout after connecting); their messages were "
            "delivered only after their lease expired (`Lease expired before it was settled` in the worker log), "
            "which is why that drain's start-to-last rate is far below its 10%–90% rate."
        )
    workers = v.get("baseline_workers", "2")
    fs, ms_ = ingest["fastapi-sqlite"], ingest["mailroom-sqs"]
    fq = ingest["fastapi-sqs"]
    if mail["rps"] and fs["rps"]:
        notes.append(
            f"Against FastAPI + SQLite: mailroom answers {fmt(mail['rps'])} req/s, the FastAPI service "
            f"({workers} uvicorn worker processes, a commit with `synchronous=FULL` per request) "
            f"{fmt(fs['rps'])} req/s: {pair_ratio[('mailroom', 'fastapi-sqlite')]:.2f} × as many, with p99 "
            f"{fmt(mail['p99_ms'], 2)} ms against {fmt(fs['p99_ms'], 2)} ms. CPU per request: "
            f"{fmt(mail['cpu_us'])} µs in mailroom, {fmt(fs['cpu_us'])} µs in the uvicorn workers. Both answer only "
            "after the message is on disk; mailroom shares one fsync among the requests that arrive together "
            "(group commit), the baseline pays one per request and its processes take turns at SQLite's write lock."
        )
    if ms_["rps"] and fq["rps"]:
        batches = num(v.get("ingest_mailroom-sqs_send_batches"))
        accepted = num(v.get("ingest_mailroom-sqs_accepted"))
        moto_note = ""
        if ms_["moto_cpu_pct"] is not None and fq["moto_cpu_pct"] is not None:
            moto_note = (
                f" The moto server (one Python process) was {fmt(ms_['moto_cpu_pct'])}% of a core busy during mailroom's "
                f"runs ({fmt(ms_['moto_cpu_us'])} µs per request) and {fmt(fq['moto_cpu_pct'])}% during the baseline's "
                f"({fmt(fq['moto_cpu_us'])} µs per request)"
                + (
                    ": the emulator, not either client, bounds these numbers. They are no estimate of either "
                    "service against real SQS; the ratio says how much of the emulator's work each client needs "
                    "per message."
                    if max(ms_["moto_cpu_pct"], fq["moto_cpu_pct"]) >= 85
                    else "."
                )
            )
        notes.append(
            f"Against FastAPI + SQS: on the same moto server mailroom answers {fmt(ms_['rps'])} req/s, the FastAPI "
            f"service {fmt(fq['rps'])} req/s ({pair_ratio[('mailroom-sqs', 'fastapi-sqs')]:.2f} ×). mailroom gathers "
            "concurrent accepts into `SendMessageBatch` calls of up to 10 (and also records each message in its "
            "SQLite store); the baseline makes one `SendMessage` call per request with boto3 from FastAPI's "
            "thread pool"
            + (
                f" (mailroom made {fmt(batches)} `SendMessageBatch` calls for {fmt(accepted)} messages, "
                f"{accepted / batches:.1f} a call)"
                if batches and accepted
                else ""
            )
            + ". Both queues are emptied as they fill by the same consumer (receive and delete in batches "
            "of 10), which moto also serves." + moto_note
        )
    if celery.get("rate_per_s") is not None and rate3.get("interval_rate_per_s") is not None:
        notes.append(
            f"Send rate: with the ceiling set to {fmt(rate_target)}/s everywhere, {rate_workers} mailroom workers "
            f"together sent {rate3['interval_rate_per_s']:.3f}/s (at most {rate3.get('max_in_1s')} in any 1 s): "
            f"the ceiling is one GCRA shared through Redis. {rate_workers} Celery workers with "
            f"`rate_limit=\"{fmt(rate_target)}/s\"` sent {celery['rate_per_s']:.2f}/s "
            f"({celery_over:.2f} × the ceiling, at most {celery.get('max_in_1s')} in any 1 s): Celery enforces "
            "a task's rate limit in each worker's consumer, so the limit is per worker and the provider's real "
            "limit is exceeded as soon as a second worker starts. That is the complaint listed in DESIGN.md "
            "(\"rate limits that are per worker instead of global\"), measured."
        )
    if ingest["fastapi-sqlite"]["rss_kib"] and mail["rss_kib"]:
        notes.append(
            f"Memory: after the ingest load `mailroom api` held {fmt(mib(mail['rss_kib']), 1)} MiB in one process; "
            f"the FastAPI service {fmt(mib(fs['rss_kib']), 1)} MiB (SQLite) and {fmt(mib(fq['rss_kib']), 1)} MiB "
            f"(SQS, boto3 loaded) summed over its {fs['processes'] or 'n/a'} processes (uvicorn's supervisor and "
            f"{workers} workers). The {rate_workers} Celery workers (prefork, concurrency 1: "
            f"{v.get('rate_celery3_processes', 'n/a')} processes) held {fmt(mib(num(v.get('rate_celery3_rss_kib'))), 1)} "
            f"MiB against {fmt(mib(num(v.get('rate_mailroom3_rss_kib'))), 1)} MiB for the {rate_workers} mailroom "
            "workers. RSS counts pages that forked processes share in each of them; PSS (in parentheses in the tables) "
            "shares them out."
        )
    busy = {k[len("busy_before_"):]: v[k] for k in v if k.startswith("busy_before_")}
    noisy = {k: b for k, b in busy.items() if num(b, 0) > 25}
    if noisy:
        notes.append(
            "Other work was running on the machine before some phases (CPU busy, %): "
            + ", ".join(f"{k} {b}" for k, b in noisy.items())
            + "; those numbers may be low."
        )
    for failure in v.get("checks_failed", []):
        notes.append(f"Correctness check failed: {failure}")

    elapsed = num(v.get("elapsed_s"))
    build_note = (
        "the release binaries already built (`BENCH_SKIP_BUILD=1`)"
        if v.get("build_skipped") or not os.path.exists(os.path.join(r, "build.log"))
        else "release build included"
    )
    pkg = lambda name: v.get(f"pkg_{name}", "n/a")  # noqa: E731
    svg = os.path.relpath(a.svg, os.path.dirname(os.path.abspath(a.doc))) if a.svg else None
    plot = (
        f"![Achieved send rate per 1 s bucket: mailroom with 1 and {rate_workers} workers, Celery with "
        f"{rate_workers} workers, and the {fmt(rate_target)}/s ceiling]({svg})\n\n"
        f"[{os.path.basename(svg)}]({svg}): messages the relay received in each 1 s after the first one, "
        f"drawn by `bench/plot_rate.py` from the same runs as the table above."
        if svg
        else ""
    )
    doc = f"""# Benchmarks

All numbers below come from one run of `bench/run` on {v.get('date_utc')}, on the machine described
under [Machine](#machine), except those of the [scale-out section](#scale-out-postgresql-and-redis),
which `bench/scale` writes. Reproduce them with:

```
bench/run
```

It builds the release binaries (`--features aws,postgres,redis`), installs `wrk` and the Python
baselines' pinned packages (`bench/baselines/requirements.txt`, with pip) if they are missing,
starts every server it needs on 127.0.0.1, and writes this file and the send-rate plot beside it
(raw outputs under `bench/results/`, which git ignores). This run took {fmt(elapsed)} s, {build_note}.

## Results

{main_table}

## Against the stacks users would pick instead

The same compat request, `POST /api/email`, against mailroom and against the service a Python team
would write for it ([Baselines](#baselines)): medians of {runs} alternated runs of {duration} s, with
the same wrk, threads and connections. "CPU / request" is the user + system time of the server's
whole process tree over a run divided by the requests answered; "moto CPU" is the emulator's, over
the same run and per request, for the targets that publish to SQS (it serves their sends and the
queue's consumer). Memory is RSS summed over the process tree after the load, PSS
in parentheses.

{md_table(("target", "req/s", "p50 (ms)", "p99 (ms)", "CPU / request (µs)", "moto CPU / request (µs)", "÷ hello-world", "mailroom ÷ this", "memory after load (MiB); processes"), comparison_rows)}

The send rate at a ceiling of {fmt(rate_target)}/s, measured at the relay over the {fmt(window)} s
after each setup's first message:

{md_table(("setup", "mean spacing (msg/s)", f"msgs in {fmt(window)} s", f"msgs / {fmt(window)} s", "max in 1 s", "max in 10 s", "min gap (ms)", "received twice", "sent per worker"), rate_rows)}

{plot}

## What the numbers say

{chr(10).join('- ' + n for n in notes)}

## Machine

| | |
| --- | --- |
| CPUs (`nproc`) | {v.get('nproc')} |
| CPU model | {v.get('cpu')} |
| memory | {v.get('memory')} |
| kernel | {v.get('kernel')} |
| toolchain | {v.get('rustc')}; release profile of `Cargo.toml` |
| load tool | {v.get('wrk')}, `-t{threads} -c{connections} -d{duration}s`, `bench/post.lua` |
| SMTP relay | `scripts/smtp_relay.py` (aiosmtpd {v.get('aiosmtpd')}, {v.get('python')}) |
| SMTP sink (target row) | postfix {v.get('smtp_sink_postfix')} `smtp-sink`, from the Debian package (`scripts/servers.sh` `start_smtp_sink`) |
| baselines | {v.get('python')}; FastAPI {pkg('fastapi')} (Starlette {pkg('starlette')}, pydantic {pkg('pydantic')}), uvicorn {pkg('uvicorn')} (uvloop {pkg('uvloop')}, httptools {pkg('httptools')}), boto3 {pkg('boto3')}; Celery {pkg('celery')} (kombu {pkg('kombu')}, redis-py {pkg('redis')}) |
| emulator and brokers | moto {pkg('moto')} (SQS); PostgreSQL {v.get('postgres', 'n/a')}; Redis {v.get('redis_server', 'n/a')}, no persistence |
| source | commit {v.get('commit')} |

## Ingest runs

Runs of {duration} s each, the targets alternated in the order below, after a {v.get('warmup')} s
warm-up of each. Latencies are wrk's (ms). The same body, the compat `POST /api/email` JSON, is
posted to every target.

{md_table(("run", "target", "req/s", "p50", "p90", "p99", "max", "responses"), ingest_rows)}

Durability checks (every 202's id looked up after the servers stopped; for SQS, among the ids of
the messages the queue's consumer took from it):

- `mailroom api`, SQLite: {json.dumps(durable)}
- `mailroom api`, SQS, its store: {json.dumps(durability['mailroom-sqs-store'])}
- `mailroom api`, SQS, the queue: {json.dumps(durability['mailroom-sqs'])}
- FastAPI + SQLite: {json.dumps(durability['fastapi-sqlite'])}
- FastAPI + SQS: {json.dumps(durability['fastapi-sqs'])}

## Drain runs (`DELIVERY=none`)

{md_table(("variant", "run", "msg/s (start to last)", "msg/s (10%–90%)", "seconds", "preload msg/s (`mailroom send --file`)", "CPU busy before (%)", "worker RSS at end (MiB)", "slowest /metrics poll (ms)"), drain_rows)}

## SMTP drains

To postfix's smtp-sink:

{md_table(("concurrency", "msg/s (start to last)", "msg/s (10%–90%)", "seconds", "received by smtp-sink", "leases expired", "worker CPU (% of a core)", "smtp-sink CPU (% of a core)", "worker RSS at the end"), sink_rows)}

To the aiosmtpd test relay (`scripts/smtp_relay.py`, which writes each message to a JSON file):

{md_table(("concurrency", "msg/s (start to last)", "msg/s (10%–90%)", "seconds", "received by relay", "leases expired", "listen-queue overflows", "worker CPU (% of a core)", "relay CPU (% of a core)"), smtp_rows)}

Relay ceiling from `bench/smtp_ceiling.py`: {json.dumps(ceiling)}

Send rate from `bench/rate_analysis.py` (per-second counts left out; they are in the plot):

- 1 mailroom worker: {json.dumps({k: x for k, x in rate.items() if k != 'per_second'})}
- {rate_workers} mailroom workers: {json.dumps({k: x for k, x in rate3.items() if k != 'per_second'})}
- {rate_workers} Celery workers: {json.dumps({k: x for k, x in celery.items() if k != 'per_second'})}

## Baselines

What a Python team would build instead, kept minimal but faithful, in `bench/baselines/` (pinned in
`requirements.txt`, {v.get('python')}):

- **FastAPI + SQLite** (`api.py`, `BASELINE_SINK=sqlite`): FastAPI {pkg('fastapi')} with a pydantic
  {pkg('pydantic')} model of the same compat body: the four fields must be JSON strings (strict),
  subject and sender non-empty without CR/LF or control characters and within mailroom's length
  limits, `email_timestream` epoch seconds or RFC 3339, content non-empty; the token is checked
  first (in the body, or `Authorization: Bearer`), 401 when missing or wrong; a bad field is a 400
  `{{"error": {{"code", "message", "field"}}}}` naming it; success is a 202
  `{{"message_id", "status": "queued"}}`. It answers 202 only after it has inserted the message into
  a SQLite file (WAL, `synchronous=FULL`) and committed, one transaction per request, from
  FastAPI's thread pool through one connection per worker process (its writes taken in turn under a
  lock; between the processes, SQLite's busy timeout). Served by uvicorn {pkg('uvicorn')} (uvloop,
  httptools) with `--workers {v.get('baseline_workers', 'n/a')}` (one per core, the usual advice for
  uvicorn and FastAPI deployments) and `--no-access-log` (mailroom logs no line per request either).
- **FastAPI + SQS** (`api.py`, `BASELINE_SINK=sqs`): the same service, publishing each message with
  boto3 {pkg('boto3')} `SendMessage` (one client per process, a pool of 64 connections) to a queue on
  the same moto {pkg('moto')} server mailroom's SQS target uses, before the 202. Each of the two
  queues (mailroom's, the baseline's; each with a dead-letter queue in its redrive policy) has a
  consumer during the runs, `bench/sqs_queues.py drain`, which receives and deletes in batches of
  10 and notes every message's id: moto answers a send more slowly the more messages the queue
  holds, so a queue left to fill would slow down whichever target sent more. The durability check
  looks every 202's id up among the ids the consumer took.
- **Celery** (`celery_app.py`): Celery {pkg('celery')} with the Redis broker, task `send_email` with
  `rate_limit="{fmt(rate_target)}/s"`, `acks_late`, prefetch 1, no result backend, sending each
  message with smtplib (a new connection per message) to the same relay. {rate_workers} workers, each
  `celery -A celery_app worker --concurrency 1` under its own `--hostname`: the way the service is
  scaled out to several hosts or containers, one worker each. (One worker with `--concurrency
  {rate_workers}` would stay within the limit, because Celery applies it in the worker's consumer
  before handing tasks to the pool; it would also be one machine.)
- The bare axum hello-world is `examples/hello_world.rs`; the SQLite ceiling is
  `examples/sqlite_ceiling.rs` (the same axum and tokio, mailroom's allocator, its own database
  in the run's scratch directory).

## Method

- **Ingest.** `mailroom api` with `DELIVERY=none`, no worker, a fresh `DATA_DIR` and the default log
  level; `examples/hello_world.rs` is a bare axum 0.8 server on the same tokio multi-thread
  runtime. wrk posts the same compat body to both with the same threads and connections, and
  `bench/post.lua` counts every response by status and keeps the `message_id` of every 202.
  After the last run the API is stopped, `mailroom check` reports the queue depth, and every
  202's id is looked up in the SQLite file (`bench/check_durable.py`). Rows without a 202 are
  requests in flight when wrk stopped a run (committed, answer never read): at most one per
  connection per run. `mailroom api` with `QUEUE_BACKEND=sqs` (its own `DATA_DIR`) and the two
  FastAPI baselines are started beside them and alternated with them in every round; their 202s
  are checked the same way, in the baseline's SQLite file and among the ids taken from each SQS
  queue. A baseline's answers slower than wrk's 2 s timeout are counted as socket errors and shown,
  not treated as a failed check; any answer other than a 2xx is.
- **Drain.** `mailroom send --file` preloads the queue; `mailroom worker` (`SEND_RATE_PER_SECOND=0`,
  `WORKER_CONCURRENCY={v.get('drain_concurrency')}`, `METRICS_PORT` set) drains it while
  `bench/drain_watch.py` polls `mailroom_deliveries_total` every 20 ms. msg/s is counted from the
  moment the worker was launched to the poll that saw the last message (start-up included); the
  10%–90% figure leaves start-up and the tail out. The archive objects are counted afterwards.
- **SMTP.** The same with `DELIVERY=smtp` to the plain listener of the relay started by
  `scripts/servers.sh`, native messages with one recipient each, `VISIBILITY_TIMEOUT_SECS=15` and
  `SMTP_TIMEOUT_SECS=5`; the relay's sink is counted afterwards (no loss, no duplicate). The relay's
  own ceiling is measured first with `bench/smtp_ceiling.py` (one process per connection). The
  target row drains {fmt(num(v.get('smtp_sink_n')))} messages the same way into postfix's `smtp-sink`
  (`-c -m 1000`: up to 1,000 sessions, counters on stdout), whose message counter is compared with
  the count sent; the archive is on in both.
- **Rate.** {fmt(rate_target * (window + 15))} messages preloaded, `SEND_RATE_PER_SECOND={fmt(rate_target)}`,
  `SEND_BURST=1`, default concurrency; the relay's receive timestamps (`{{time_ns}}-{{hex}}.json`)
  give the mean spacing of the messages in the {fmt(window)} s after the first (the achieved rate),
  their count, the most in any 1 s and 10 s window, the count in each 1 s bucket (the plot), and,
  from each message's id header, any message received twice.
  GCRA with burst 1 allows at most {fmt(rate_target * window + 1)} in {fmt(window)} s and
  {fmt(rate_target + 1)} in any 1 s. The same for {rate_workers} `mailroom worker` processes on one
  PostgreSQL database (a throwaway cluster from `scripts/servers.sh`, preloaded through
  `DATABASE_URL`) with `REDIS_URL` set, so that they share the ceiling, each with its own
  `METRICS_PORT` (the delivered count per worker is read from it before it stops); and for the
  Celery baseline, {fmt(num(v.get('celery_n')))} tasks enqueued in Redis before its {rate_workers}
  workers start (enough for {rate_workers} × the ceiling). Each setup runs alone, one after the other.
- **Memory.** `VmRSS` and `VmHWM` from `/proc/PID/status`: `mailroom serve` (`DELIVERY=none`) 3 s
  after it listens, and each worker when its drain ended. For the comparison, RSS and PSS
  (`/proc/PID/smaps_rollup`) summed over each server's process tree (the process and all its
  descendants): after the ingest load for the API services, and at the end of the rate window for
  the senders.
- **Machine load.** Before each phase the run flushes dirty pages (`sync`), waits up to 60 s for
  the machine to fall below 25% CPU busy, and records how busy it was.
"""
    # The scale-out section (bench/scale) is kept as it was.
    from scale_report import kept_section

    kept = kept_section(a.doc)
    if kept:
        doc = doc.rstrip("\n") + "\n\n" + kept + "\n"
    os.makedirs(os.path.dirname(a.doc) or ".", exist_ok=True)
    with open(a.doc, "w") as f:
        f.write(doc)
    summary = {
        "ingest_cpu_us_per_request": cpu_us,
        "comparison": {
            "ingest": {k: {kk: vv for kk, vv in t.items() if kk != "runs"} for k, t in ingest.items()},
            "ratios": {f"{m}/{b}": pair_ratio[(m, b)] for m, b in PAIRS},
            "ratios_to_hello": hello_ratio,
            "durability": durability,
            "rate": {k: {kk: vv for kk, vv in x.items() if kk != "per_second"} for k, x in
                     (("mailroom-1", rate), ("mailroom-3", rate3), ("celery-3", celery))},
            "rate_per_worker": per_worker,
        },
        "ingest": {"hello_rps": hello["rps"], "mailroom_rps": mail["rps"], "ratio": ratio,
                   "sqlite_ceiling_rps": sqlite_ceiling["rps"], "sqlite_ceiling_ratio": ceiling_ratio,
                   "mailroom_p50_ms": mail["p50_ms"], "mailroom_p99_ms": mail["p99_ms"],
                   "hello_p50_ms": hello["p50_ms"], "hello_p99_ms": hello["p99_ms"], "durable": durable},
        "drain": {k: {kk: vv for kk, vv in d.items() if kk != "runs"} for k, d in drains.items()},
        "smtp": {"ceiling": ceiling, "drains": smtp, "relay_cpu_pct": smtp_relay_pct, "sink_drains": sink},
        "rate": rate,
        "memory": {"serve_idle_rss_kib": idle_rss, "serve_idle_hwm_kib": idle_hwm},
        "checks_failed": v.get("checks_failed", []),
    }
    with open(os.path.join(r, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(main_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
