#!/usr/bin/env python3
"""Watches a mailroom worker drain its queue, for bench/run.

Polls the worker's Prometheus /metrics every --interval seconds until
mailroom_deliveries_total{outcome="delivered"|"archived"} reaches --expect (or --timeout passes),
then prints one JSON object. --url and --pid may be repeated for several worker processes
draining one queue (bench/scale): the counters are summed over every --url, and the memory over
every --pid.

  rate_per_s          messages settled per second from the worker's start to the last message
  steady_rate_per_s   the same between the polls that saw 10% and 90% of --expect (start-up excluded)
  seconds             wall time from the worker's start to the last message
  outcomes            the counter by outcome (deferred and dead are reported, not counted as done)
  rss_kib, hwm_kib    the worker's VmRSS and VmHWM from /proc/PID/status at the end (summed)
  workers             how many --url were polled
  max_poll_ms         the slowest /metrics answer: the end time is late by at most this much

--started is the worker's start time in Unix seconds (bench/run passes `date +%s.%N` taken just
before it launched the process).
"""

import argparse
import json
import re
import sys
import time
import urllib.request

LINE = re.compile(r'^mailroom_deliveries_total\{([^}]*)\}\s+([0-9.eE+-]+)$')
OUTCOME = re.compile(r'outcome="([^"]+)"')
DONE = ("delivered", "archived")


def outcomes(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            o = OUTCOME.search(m.group(1))
            if o:
                out[o.group(1)] = out.get(o.group(1), 0.0) + float(m.group(2))
    return out


def memory(pids: list[int]) -> dict[str, int]:
    mem = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        mem[key] = mem.get(key, 0) + int(value.split()[0])
        except FileNotFoundError:
            pass
    return {"rss_kib": mem.get("VmRSS"), "hwm_kib": mem.get("VmHWM")}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, action="append")
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, action="append")
    p.add_argument("--started", type=float, required=True)
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()

    samples: list[tuple[float, float]] = []
    max_poll = 0.0
    last: dict[str, float] = {}
    deadline = time.time() + a.timeout
    done = 0.0
    while time.time() < deadline:
        asked = time.time()
        try:
            last = {}
            for url in a.url:
                for o, n in outcomes(url).items():
                    last[o] = last.get(o, 0.0) + n
        except OSError:
            time.sleep(a.interval)  # not listening yet
            continue
        now = time.time()
        max_poll = max(max_poll, now - asked)
        done = sum(last.get(o, 0.0) for o in DONE)
        samples.append((now, done))
        if done >= a.expect:
            break
        time.sleep(a.interval)
    mem = memory(a.pid)
    finished = done >= a.expect
    end = samples[-1][0] if samples else time.time()
    # The first poll at or past the count, so a slow poll only ever understates the rate.
    first_seen = {}
    for frac in (0.1, 0.9):
        first_seen[frac] = next(((t, n) for t, n in samples if n >= frac * a.expect), None)
    steady = None
    if first_seen[0.1] and first_seen[0.9] and first_seen[0.9][0] > first_seen[0.1][0]:
        (t1, n1), (t2, n2) = first_seen[0.1], first_seen[0.9]
        steady = (n2 - n1) / (t2 - t1)
    seconds = end - a.started
    result = {
        "expected": a.expect,
        "finished": finished,
        "settled": done,
        "seconds": round(seconds, 3),
        "rate_per_s": round(done / seconds, 1) if seconds > 0 else None,
        "steady_rate_per_s": round(steady, 1) if steady else None,
        "polls": len(samples),
        "max_poll_ms": round(max_poll * 1000, 1),
        "outcomes": last,
        "workers": len(a.url),
        **mem,
    }
    print(json.dumps(result))
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
