#!/usr/bin/env python3
"""Turns one bench/run results directory into docs/benchmarks.md and prints the main table.

Reads values.tsv (scalar values recorded by bench/run) and the JSON files the phases left:
ingest/*.json (bench/post.lua summaries), ingest/durable.json, drain/*.json and smtp/drain-*.json
(bench/drain_watch.py), smtp/ceiling.json (bench/smtp_ceiling.py), rate/rate.json
(bench/rate_analysis.py). Also writes summary.json beside them. The scale-out section that
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--doc", required=True)
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
    for target in ("hello", "mailroom"):
        rows = [load(os.path.join(r, "ingest", f"{target}-{i}.json")) for i in range(1, runs + 1)]
        rows = [x for x in rows if x]
        ingest[target] = {
            "runs": rows,
            "rps": statistics.median(x["rps"] for x in rows) if rows else None,
            "p50_ms": statistics.median(ms(x["latency_us"]["p50"]) for x in rows) if rows else None,
            "p99_ms": statistics.median(ms(x["latency_us"]["p99"]) for x in rows) if rows else None,
        }
    hello, mail = ingest["hello"], ingest["mailroom"]
    ratio = mail["rps"] / hello["rps"] if hello["rps"] and mail["rps"] else None
    durable = load(os.path.join(r, "ingest", "durable.json")) or {}
    non2xx = sum(
        n
        for t in ingest.values()
        for run in t["runs"]
        for status, n in run["statuses"].items()
        if status not in ("200", "202")
    )
    socket_errors = sum(n for t in ingest.values() for run in t["runs"] for n in run["errors"].values())

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

    def cpu_share(key, seconds):
        cpu = num(v.get(key))
        return cpu / seconds * 100 if cpu is not None and seconds else None

    ceiling_relay_pct = cpu_share("smtp_ceiling_relay_cpu_s", ceiling.get("seconds"))
    smtp_relay_pct = {c: cpu_share(f"smtp_drain-c{c}_relay_cpu_s", smtp[c].get("seconds")) for c in smtp}
    smtp_worker_pct = {c: cpu_share(f"smtp_drain-c{c}_worker_cpu_s", smtp[c].get("seconds")) for c in smtp}

    rate = load(os.path.join(r, "rate", "rate.json")) or {}
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

    idle_rss = num(v.get("serve_idle_rss_kib"))
    idle_hwm = num(v.get("serve_idle_hwm_kib"))
    mib = lambda kib: None if kib is None else kib / 1024  # noqa: E731

    table = []
    row = table.append
    row(("Ingest `POST /api/email`, `mailroom api`", f"{fmt(mail['rps'])} req/s; p50 {fmt(mail['p50_ms'], 2)} ms, p99 {fmt(mail['p99_ms'], 2)} ms", "", ""))
    row(("Ingest, bare axum hello-world (same wrk, same body)", f"{fmt(hello['rps'])} req/s; p50 {fmt(hello['p50_ms'], 2)} ms, p99 {fmt(hello['p99_ms'], 2)} ms", "", ""))
    row(("Ingest ratio mailroom / hello-world", fmt(ratio, 3), "≥ 0.5", verdict(None if ratio is None else ratio >= 0.5)))
    row((
        "Every 202 durable (ids answered 202 found in SQLite after the API stopped)",
        f"{fmt(durable.get('accepted_202'))} × 202, {fmt(durable.get('rows'))} rows, {fmt(durable.get('missing'))} missing; "
        f"{non2xx} non-2xx, {socket_errors} socket errors",
        "0 missing, 0 non-2xx",
        verdict(durable.get("ok") and non2xx == 0 and socket_errors == 0 if durable else None),
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
        s = smtp[c]
        row((
            f"Drain over SMTP to the local aiosmtpd relay, no rate limit ({fmt(num(v.get('smtp_n')))} msgs, concurrency {c})",
            f"{fmt(s.get('rate_per_s'))} msg/s (steady {fmt(s.get('steady_rate_per_s'))}); relay CPU {fmt(smtp_relay_pct[c])}% of a core",
            "≥ 2,000/s",
            verdict(None if s.get("rate_per_s") is None else s["rate_per_s"] >= 2000),
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

    def md_table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(str(c) for c in r_) + " |" for r_ in rows]
        return "\n".join(lines)

    main_table = md_table(("measure", f"result (median of {runs} ingest / {drain_runs} drain runs)", "target", "verdict"), table)

    ingest_rows = []
    for i in range(runs):
        for name, t in (("hello-world", hello), ("mailroom", mail)):
            if i < len(t["runs"]):
                x = t["runs"][i]
                ingest_rows.append((
                    i + 1, name, fmt(x["rps"]), fmt(ms(x["latency_us"]["p50"]), 2), fmt(ms(x["latency_us"]["p90"]), 2),
                    fmt(ms(x["latency_us"]["p99"]), 2), fmt(ms(x["latency_us"]["max"]), 1),
                    ", ".join(f"{k}: {n:,}" for k, n in sorted(x["statuses"].items())),
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

    notes = []
    if ratio is not None:
        notes.append(
            f"Ingest: mailroom answers {fmt(mail['rps'])} req/s against {fmt(hello['rps'])} for a handler that does nothing "
            f"(ratio {ratio:.3f}). Both share the machine's {v.get('nproc')} cores with wrk itself; each mailroom request "
            "parses and validates the JSON, builds and serialises the message, and waits for its SQLite group commit "
            "(WAL, `synchronous=FULL`) before the 202."
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
            f"{cpu_us['hello']:.0f} µs in the hello-world (median over runs), so on a machine whose cores wrk "
            "shares the ratio of request rates follows the ratio of CPU per request."
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
                "directory by up to `WORKER_CONCURRENCY` blocking threads at once; it varies a lot from run to run "
                "(see the drain table)."
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
        cap = 32 / (slow / 1000)
        notes.append(
            f"SMTP client: on one connection a message costs {slow:.1f} ms when the body and the final "
            f"`\\r\\n.\\r\\n` go out as two writes without TCP_NODELAY, which is what lettre 0.11 does, against "
            f"{probe['one_write_nagle_ms']:.1f} ms in one write and {fmt(probe.get('two_writes_nodelay_ms'), 1)} ms with "
            "TCP_NODELAY: Nagle's algorithm holds the terminator until the relay acknowledges the body, and the "
            f"relay delays that acknowledgement. With mailroom's 32 pooled connections that caps delivery near "
            f"{fmt(cap)} msg/s, whatever the relay"
            + (
                f"; the concurrency-256 drain gets past it ({fmt(smtp[256]['rate_per_s'])} msg/s) only because lettre "
                "opens a connection per concurrent send beyond the 32 it keeps pooled, then closes them "
                f"({v.get('smtp_drain-c256_listen_overflows', 'n/a')} connections overflowed the relay's listen queue)."
                if smtp[256].get("rate_per_s") and smtp[256]["rate_per_s"] > cap
                else "."
            )
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
    doc = f"""# Benchmarks

All numbers below come from one run of `bench/run` on {v.get('date_utc')}, on the machine described
under [Machine](#machine), except those of the [scale-out section](#scale-out-postgresql-and-redis),
which `bench/scale` writes. Reproduce them with:

```
bench/run
```

It builds the release binaries, installs `wrk` if it is missing, starts every server it needs on
127.0.0.1, and writes this file (raw outputs under `bench/results/`, which git ignores). This run
took {fmt(elapsed)} s, release build included.

## Results

{main_table}

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
| source | commit {v.get('commit')} |

## Ingest runs

Alternated hello-world and mailroom runs of {duration} s each, after a {v.get('warmup')} s warm-up of each.
Latencies are wrk's (ms). The same body, the compat `POST /api/email` JSON, is posted to both.

{md_table(("run", "target", "req/s", "p50", "p90", "p99", "max", "responses"), ingest_rows)}

Durability check: {json.dumps(durable)}

## Drain runs (`DELIVERY=none`)

{md_table(("variant", "run", "msg/s (start to last)", "msg/s (10%–90%)", "seconds", "preload msg/s (`mailroom send --file`)", "CPU busy before (%)", "worker RSS at end (MiB)", "slowest /metrics poll (ms)"), drain_rows)}

## SMTP drains

{md_table(("concurrency", "msg/s (start to last)", "msg/s (10%–90%)", "seconds", "received by relay", "leases expired", "listen-queue overflows", "worker CPU (% of a core)", "relay CPU (% of a core)"), smtp_rows)}

Relay ceiling from `bench/smtp_ceiling.py`: {json.dumps(ceiling)}

Send rate from `bench/rate_analysis.py`: {json.dumps(rate)}

## Method

- **Ingest.** `mailroom api` with `DELIVERY=none`, no worker, a fresh `DATA_DIR` and the default log
  level; `examples/hello_world.rs` is a bare axum 0.8 server on the same tokio multi-thread
  runtime. wrk posts the same compat body to both with the same threads and connections, and
  `bench/post.lua` counts every response by status and keeps the `message_id` of every 202.
  After the last run the API is stopped, `mailroom check` reports the queue depth, and every
  202's id is looked up in the SQLite file (`bench/check_durable.py`). Rows without a 202 are
  requests in flight when wrk stopped a run (committed, answer never read): at most one per
  connection per run.
- **Drain.** `mailroom send --file` preloads the queue; `mailroom worker` (`SEND_RATE_PER_SECOND=0`,
  `WORKER_CONCURRENCY={v.get('drain_concurrency')}`, `METRICS_PORT` set) drains it while
  `bench/drain_watch.py` polls `mailroom_deliveries_total` every 20 ms. msg/s is counted from the
  moment the worker was launched to the poll that saw the last message (start-up included); the
  10%–90% figure leaves start-up and the tail out. The archive objects are counted afterwards.
- **SMTP.** The same with `DELIVERY=smtp` to the plain listener of the relay started by
  `scripts/servers.sh`, native messages with one recipient each, `VISIBILITY_TIMEOUT_SECS=15` and
  `SMTP_TIMEOUT_SECS=5`; the relay's sink is counted afterwards (no loss, no duplicate). The relay's
  own ceiling is measured first with `bench/smtp_ceiling.py` (one process per connection).
- **Rate.** {fmt(rate_target * (window + 15))} messages preloaded, `SEND_RATE_PER_SECOND={fmt(rate_target)}`,
  `SEND_BURST=1`, default concurrency; the relay's receive timestamps (`{{time_ns}}-{{hex}}.json`)
  give the mean spacing of the messages in the {fmt(window)} s after the first (the achieved rate),
  their count, and the most in any 1 s window.
  GCRA with burst 1 allows at most {fmt(rate_target * window + 1)} in {fmt(window)} s and
  {fmt(rate_target + 1)} in any 1 s.
- **Memory.** `VmRSS` and `VmHWM` from `/proc/PID/status`: `mailroom serve` (`DELIVERY=none`) 3 s
  after it listens, and each worker when its drain ended.
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
        "ingest": {"hello_rps": hello["rps"], "mailroom_rps": mail["rps"], "ratio": ratio,
                   "mailroom_p50_ms": mail["p50_ms"], "mailroom_p99_ms": mail["p99_ms"],
                   "hello_p50_ms": hello["p50_ms"], "hello_p99_ms": hello["p99_ms"], "durable": durable},
        "drain": {k: {kk: vv for kk, vv in d.items() if kk != "runs"} for k, d in drains.items()},
        "smtp": {"ceiling": ceiling, "drains": smtp, "relay_cpu_pct": smtp_relay_pct},
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
