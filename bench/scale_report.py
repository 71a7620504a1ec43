#!/usr/bin/env python3
"""Turns one bench/scale results directory into the scale-out section of docs/benchmarks.md.

Reads values.tsv (scalar values recorded by bench/scale), drain/*.json (bench/drain_watch.py, one
per case and run) and rate/rate.json (bench/rate_analysis.py). The section sits between two
marker comments: it replaces an earlier one, or is appended to the file; the rest of the file
(bench/run's, written by bench/report.py, which keeps this section) is left as it is. Also writes
summary.json beside the results and prints the main table.
"""

import argparse
import json
import os
import statistics
import sys

from report import fmt, load, num, values, verdict

BEGIN = "<!-- bench/scale: begin. This section is written by bench/scale; bench/run keeps it. -->"
END = "<!-- bench/scale: end -->"


def kept_section(doc_path: str) -> str | None:
    """The scale-out section of an existing file, markers included, or None."""
    try:
        with open(doc_path) as f:
            text = f.read()
    except OSError:
        return None
    start = text.find(BEGIN)
    end = text.find(END, start)
    if start < 0 or end < 0:
        return None
    return text[start : end + len(END)]


def put_section(doc_path: str, section: str) -> None:
    try:
        with open(doc_path) as f:
            text = f.read()
    except OSError:
        text = ""
    start = text.find(BEGIN)
    end = text.find(END, start)
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len(END) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    os.makedirs(os.path.dirname(doc_path) or ".", exist_ok=True)
    with open(doc_path, "w") as f:
        f.write(text)


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--doc", required=True)
    a = p.parse_args()
    r = a.results
    v = values(r)
    runs = int(v.get("runs", 5))
    n = int(num(v.get("n"), 0))
    counts = [int(c) for c in v.get("worker_counts", "1 2 4").split()]
    rate_target = num(v.get("rate"), 7.0)
    window = num(v.get("rate_window"), 60.0)
    rate_workers = int(num(v.get("rate_workers"), 3))

    cases = [("sqlite", "SQLite, 1 worker process", 1)]
    cases += [(f"pg{c}", f"PostgreSQL, {c} worker process{'es' if c > 1 else ''}", c) for c in counts]
    drains = {}
    for key, label, workers in cases:
        rows = []
        for i in range(1, runs + 1):
            x = load(os.path.join(r, "drain", f"{key}-{i}.json"))
            if x:
                rows.append((i, x))

        def median(field, rows=rows):
            xs = [x[field] for _, x in rows if x.get(field) is not None]
            return statistics.median(xs) if xs else None

        def median_value(suffix, rows=rows, key=key):
            xs = [num(v.get(f"{key}-{i}_{suffix}")) for i, _ in rows]
            xs = [x for x in xs if x is not None]
            return statistics.median(xs) if xs else None

        drains[key] = {
            "label": label,
            "workers": workers,
            "runs": rows,
            "rate": median("rate_per_s"),
            "steady": median("steady_rate_per_s"),
            "worker_cpu_s": median_value("worker_cpu_s"),
            "postgres_cpu_s": median_value("postgres_cpu_s"),
            "machine_busy_pct": median_value("machine_busy_pct"),
        }
    base = drains["sqlite"]["rate"]
    base_steady = drains["sqlite"]["steady"]

    def ratio(x, b):
        return x / b if x and b else None

    rate = load(os.path.join(r, "rate", "rate.json")) or {}
    rate_ok = None
    if rate.get("interval_rate_per_s") is not None:
        spacing = rate["interval_rate_per_s"]
        rate_ok = (
            spacing <= rate_target * 1.01
            and spacing >= rate_target * 0.95
            and rate["in_window"] <= rate_target * window + 1
            and rate["max_in_1s"] <= rate_target + 1
            and rate.get("covered_s", 0) >= window
            and rate.get("duplicates") == 0
        )
    split = [v.get(f"rate_worker_{i}_delivered", "n/a") for i in range(1, rate_workers + 1)]

    table = []
    for key, _, _ in cases:
        d = drains[key]
        table.append((
            f"Drain `DELIVERY=none`, `ARCHIVE_URL=none`, no rate limit: {d['label']} ({fmt(n)} msgs)",
            f"{fmt(d['rate'])} msg/s (10%–90%: {fmt(d['steady'])})",
            f"{fmt(ratio(d['rate'], base), 2)} ({fmt(ratio(d['steady'], base_steady), 2)})",
            "",
            "",
        ))
    table.append((
        f"Send rate, {rate_workers} workers on PostgreSQL sharing the ceiling through Redis, "
        f"`SEND_RATE_PER_SECOND={fmt(rate_target)}`, `SEND_BURST=1`, over {fmt(window)} s at the relay",
        f"{fmt(rate.get('interval_rate_per_s'), 3)}/s mean spacing; {rate.get('in_window', 'n/a')} msgs in the "
        f"{fmt(window)} s after the first ({fmt(rate.get('rate_per_s'), 3)}/s); max {rate.get('max_in_1s', 'n/a')} "
        f"in any 1 s, {rate.get('max_in_10s', 'n/a')} in any 10 s; sent per worker {' / '.join(split)}; "
        f"{rate.get('duplicates', 'n/a')} received twice",
        "",
        f"mean ≤ {fmt(rate_target)}/s (+1%) and ≥ 95% of it; ≤ {fmt(rate_target * window + 1)} in {fmt(window)} s "
        f"and ≤ {fmt(rate_target + 1)} in any 1 s (rate × time + burst 1); none twice",
        verdict(rate_ok),
    ))
    main_table = md_table(
        ("measure", f"result (median of {runs} runs)", "ratio to SQLite (10%–90%)", "target", "verdict"), table
    )

    run_rows = []
    for key, _, _ in cases:
        d = drains[key]
        for i, x in d["runs"]:
            run_rows.append((
                d["label"], i, fmt(x.get("rate_per_s")), fmt(x.get("steady_rate_per_s")), fmt(x.get("seconds"), 2),
                fmt(num(v.get(f"{key}-{i}_preload_per_s"))),
                fmt(num(v.get(f"{key}-{i}_worker_cpu_s")), 1),
                fmt(num(v.get(f"{key}-{i}_postgres_cpu_s")), 1) if key != "sqlite" else "",
                v.get(f"{key}-{i}_machine_busy_pct", "n/a"),
                v.get(f"{key}-{i}_leases_expired", "n/a"),
                v.get(f"busy_before_{key}-{i}", "n/a"),
                fmt((x.get("rss_kib") or 0) / 1024, 1),
            ))

    notes = []
    pg = [drains[f"pg{c}"] for c in counts]
    if base and all(d["rate"] for d in pg):
        notes.append(
            f"Drain: one SQLite worker settles {fmt(base)} msg/s; on PostgreSQL "
            + ", ".join(f"{d['workers']} worker{'s' if d['workers'] > 1 else ''} settle{'' if d['workers'] > 1 else 's'} "
                        f"{fmt(d['rate'])} msg/s ({fmt(ratio(d['rate'], base), 2)} × SQLite)" for d in pg)
            + f". From 1 to {pg[-1]['workers']} PostgreSQL workers the rate changes by "
            f"{fmt(ratio(pg[-1]['rate'], pg[0]['rate']), 2)} ×."
        )
        per_msg = []
        for d in [drains["sqlite"]] + pg:
            w = d["worker_cpu_s"]
            g = d["postgres_cpu_s"] if d is not drains["sqlite"] else None
            if w is not None and n:
                per_msg.append(
                    f"{d['label']}: {w / n * 1e6:.0f} µs in mailroom"
                    + (f" + {g / n * 1e6:.0f} µs in PostgreSQL" if g is not None else "")
                    + f", machine {fmt(d['machine_busy_pct'])}% busy"
                )
        if per_msg:
            notes.append(
                f"CPU per message during the drains (medians; the machine's {v.get('nproc')} cores are shared by "
                "the workers, the PostgreSQL server and the watcher): " + "; ".join(per_msg) + "."
            )
        last = pg[-1]
        cores = num(v.get("nproc"))
        if last["worker_cpu_s"] is not None and last["postgres_cpu_s"] is not None and cores and n:
            per = (last["worker_cpu_s"] + last["postgres_cpu_s"]) / n
            bound = cores / per
            busy_pct = last["machine_busy_pct"] or 0
            text = (
                f"With {last['workers']} PostgreSQL workers a message costs {per * 1e6:.0f} µs of CPU in mailroom "
                f"and PostgreSQL together, so {fmt(cores)} fully busy cores could settle at most {fmt(bound)} msg/s; "
                f"the {last['workers']} workers reached {fmt(last['steady'])} msg/s between 10% and 90% "
                f"({fmt(ratio(last['steady'], bound) * 100 if ratio(last['steady'], bound) else None)}% of that) "
                f"with the machine {fmt(busy_pct)}% busy."
            )
            if busy_pct >= 85:
                text += (
                    " The drain is bound by this machine's CPU: more worker processes only "
                    "share the same cores with the database"
                    + (
                        ", which spends more CPU per message than mailroom does."
                        if last["postgres_cpu_s"] > last["worker_cpu_s"]
                        else "."
                    )
                    + " On separate hosts (RDS and several worker tasks) the workers would not compete with "
                    "the database for cores; this machine cannot show that scaling."
                )
            else:
                text += " The machine was not saturated, so something other than CPU also limits the drain."
            notes.append(text)
    if rate.get("interval_rate_per_s") is not None:
        notes.append(
            f"Rate: {rate_workers} worker processes, each with its own pool of SMTP connections and "
            f"`WORKER_CONCURRENCY` deliveries in flight, together sent {fmt(rate['interval_rate_per_s'], 3)}/s "
            f"(mean spacing over the {fmt(window)} s after the first message), at most {rate['max_in_1s']} in any "
            f"1 s and {rate.get('max_in_10s', 'n/a')} in any 10 s, against a ceiling of {fmt(rate_target)}/s: the "
            "ceiling is global (GCRA reservations in Redis), not per worker. Every worker took part "
            f"({' / '.join(split)} delivered), and the relay received {rate.get('duplicates', 'n/a')} message(s) twice."
        )
    busy = {k[len("busy_before_"):]: v[k] for k in v if k.startswith("busy_before_")}
    noisy = {k: b for k, b in busy.items() if num(b, 0) > 25}
    if noisy:
        notes.append(
            "Other work was running on the machine before some runs (CPU busy, %): "
            + ", ".join(f"{k} {b}" for k, b in noisy.items())
            + "; those numbers may be low."
        )
    for failure in v.get("checks_failed", []):
        notes.append(f"Correctness check failed: {failure}")

    elapsed = num(v.get("elapsed_s"))
    section = f"""{BEGIN}
## Scale-out: PostgreSQL and Redis

The numbers in this section come from one run of `bench/scale` on {v.get('date_utc')}, on the
machine described under [Machine](#machine) (commit {v.get('commit')}), separately from the run of
`bench/run` above. Reproduce them with:

```
bench/scale        # the same as: bench/run --scale
```

It builds `mailroom` with `--features postgres,redis`, starts a throwaway PostgreSQL cluster, Redis
and the SMTP relay on 127.0.0.1 (`scripts/servers.sh`), and rewrites only this section of this
file (raw outputs under `bench/results/scale-*/`). This run took {fmt(elapsed)} s, release build
included.

### Scale-out results

{main_table}

### What the scale-out numbers say

{chr(10).join('- ' + x for x in notes)}

### Scale-out drain runs

Each row is one case from a fresh store: {fmt(n)} messages preloaded with `mailroom send --file`,
then the worker processes started at once and watched until their counters summed to {fmt(n)}.
CPU is user + system time over the drain; "machine busy" is the share of both cores busy from the
workers' launch to the last message.

{md_table(("case", "run", "msg/s (start to last)", "msg/s (10%–90%)", "seconds", "preload msg/s", "mailroom CPU (s)", "PostgreSQL CPU (s)", "machine busy (%)", "leases expired", "CPU busy before (%)", "workers' RSS at end (MiB)"), run_rows)}

Send rate from `bench/rate_analysis.py`: {json.dumps({k: x for k, x in rate.items() if k != "per_second"})}

### Scale-out setup and method

| | |
| --- | --- |
| machine | {v.get('nproc')} × {v.get('cpu')}, {v.get('memory')}, {v.get('kernel')}; {v.get('rustc')} |
| PostgreSQL | {v.get('postgres')}, a throwaway cluster from `scripts/servers.sh` ({v.get('postgres_settings')}), one database per case |
| Redis | {v.get('redis')}, no persistence |
| mailroom | `--features postgres,redis`; `DATABASE_POOL_SIZE={v.get('pool_size') or 'default'}` per process; `WORKER_CONCURRENCY={v.get('concurrency')}` per process in the drains; default log level |
| SMTP relay | `scripts/smtp_relay.py` (aiosmtpd {v.get('aiosmtpd')}, {v.get('python')}) |

- **Drain.** Every case runs with `DELIVERY=none`, `ARCHIVE_URL=none` and `SEND_RATE_PER_SECOND=0`,
  so what is measured is the queue and the store: lease a batch, read statuses, record the
  outcome with its event, settle the lease. SQLite: one `mailroom worker` on a fresh `DATA_DIR`
  (the embedded default). PostgreSQL: a fresh database (`CREATE DATABASE`), preloaded through
  `DATABASE_URL`, then 1, 2 or 4 `mailroom worker` processes launched together, each with its own
  `METRICS_PORT` and `INSTANCE_ID`. `bench/drain_watch.py` polls every worker's `/metrics` every 20 ms
  and sums `mailroom_deliveries_total`; msg/s is counted from the launch of the first worker to the
  poll that saw the last message (start-up, connection and migration check included); the
  10%–90% figure leaves start-up and the tail out. Afterwards the store must hold {fmt(n)} settled
  messages and an empty queue. The {runs} rounds alternate the cases (SQLite, then PostgreSQL with
  {', '.join(str(c) for c in counts)} workers), and each figure in the table above is the median.
- **Rate.** {fmt(rate_target * (window + 15))} messages preloaded into one PostgreSQL database; {rate_workers}
  `mailroom worker` processes with `REDIS_URL` (one `REDIS_KEY_PREFIX` for the run),
  `DELIVERY=smtp` to the relay's plain listener, `SEND_RATE_PER_SECOND={fmt(rate_target)}`,
  `SEND_BURST=1` and the default concurrency, stopped {fmt(window + 2)} s after the first message
  arrived. The relay's receive timestamps give the mean spacing of the messages in the {fmt(window)} s
  after the first, their count, and the most in any 1 s and 10 s window; every message's
  `X-Mailroom-Id` header is checked for duplicates, and each worker's delivered counter is read
  from its `/metrics` before it stops.
{END}"""
    put_section(a.doc, section)
    summary = {
        "drain": {k: {kk: vv for kk, vv in d.items() if kk != "runs"} for k, d in drains.items()},
        "rate": rate,
        "rate_per_worker_delivered": split,
        "rate_ok": rate_ok,
        "checks_failed": v.get("checks_failed", []),
    }
    with open(os.path.join(r, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(main_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
