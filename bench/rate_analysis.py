#!/usr/bin/env python3
"""The achieved send rate, from the SMTP relay's sink, for bench/run.

The relay (scripts/smtp_relay.py) names every message it receives `{time_ns}-{hex}.json`, the
time taken when the DATA command completed. From those times this prints one JSON object:

  messages             messages in the sink
  window_s             the window measured: --window seconds from the first message
  in_window            messages received in [first, first + window)
  rate_per_s           in_window / window_s: the achieved rate
  interval_rate_per_s  (in_window - 1) / (last - first) inside the window: the mean spacing
  max_in_1s            the most messages in any half-open 1-second window [t, t + 1s)
  max_in_10s           the same for 10-second windows (a ceiling held on average over 10 s)
  min_gap_ms           the shortest gap between two consecutive messages
  error_pct            (rate_per_s - target) / target * 100
  per_second           messages received in each 1 s bucket [first + k, first + k + 1) of the
                       window, k = 0 .. window - 1 (what bench/plot_rate.py draws)

With --check-duplicates it also reads every message's X-Mailroom-Id header (or --id-header) from
the .eml beside each .json and adds distinct_ids, duplicates (messages received more than once)
and without_id.
"""

import argparse
import bisect
import json
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sink", required=True)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--target", type=float, required=True)
    p.add_argument("--check-duplicates", action="store_true")
    p.add_argument("--id-header", default="X-Mailroom-Id")
    a = p.parse_args()

    times = sorted(
        int(name.split("-", 1)[0]) / 1e9
        for name in os.listdir(a.sink)
        if name.endswith(".json") and not name.startswith(".")
    )
    if len(times) < 2:
        print(json.dumps({"messages": len(times), "error": "too few messages in the sink"}))
        return 1
    first = times[0]
    window = [t for t in times if t < first + a.window]
    span = window[-1] - window[0]
    # Every window that can hold the most messages starts at a message.
    max_in_1s = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    max_in_10s = max(bisect.bisect_left(times, t + 10.0) - i for i, t in enumerate(times))
    gaps = [b - a_ for a_, b in zip(times, times[1:])]
    rate = len(window) / a.window
    result = {
        "messages": len(times),
        "window_s": a.window,
        "covered_s": round(times[-1] - first, 3),
        "in_window": len(window),
        "rate_per_s": round(rate, 4),
        "interval_rate_per_s": round((len(window) - 1) / span, 4) if span > 0 else None,
        "max_in_1s": max_in_1s,
        "max_in_10s": max_in_10s,
        "min_gap_ms": round(min(gaps) * 1000, 1),
        "target_per_s": a.target,
        "error_pct": round((rate - a.target) / a.target * 100, 3),
        "per_second": [
            bisect.bisect_left(times, first + k + 1) - bisect.bisect_left(times, first + k)
            for k in range(int(a.window))
        ],
    }
    if a.check_duplicates:
        ids = [header_value(os.path.join(a.sink, name[: -len(".json")] + ".eml"), a.id_header)
               for name in os.listdir(a.sink)
               if name.endswith(".json") and not name.startswith(".")]
        known = [i for i in ids if i is not None]
        result["distinct_ids"] = len(set(known))
        result["duplicates"] = len(known) - len(set(known))
        result["without_id"] = len(ids) - len(known)
    print(json.dumps(result))
    return 0


def header_value(path: str, header: str) -> str | None:
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                break  # end of the headers
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == header.lower():
                return value.strip()
    return None


if __name__ == "__main__":
    sys.exit(main())
