#!/usr/bin/env python3
"""The SMTP relay's own ceiling, for bench/run: how many messages per second the local aiosmtpd
relay accepts from a lean client, so a reader can tell whether mailroom or the relay limits the
SMTP drain.

Sends --count messages of about the size mailroom sends, over --connections persistent SMTP
connections (one process each, so the client is not held back by Python's GIL), and prints one
JSON object: {"messages", "connections", "seconds", "rate_per_s"}.
"""

import argparse
import json
import multiprocessing
import smtplib
import sys
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid


def send(args: tuple[int, int, int, int]) -> int:
    port, worker, count, connections = args
    sent = 0
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for i in range(worker, count, connections):
            m = EmailMessage()
            m["From"] = "Bench <bench@example.com>"
            m["To"] = f"rcpt{i % 100}@example.com"
            m["Subject"] = f"Relay ceiling {i}"
            m["Date"] = formatdate()
            m["Message-ID"] = make_msgid(domain="bench.example.com")
            m.set_content(f"Benchmark message {i} from bench/run.\n")
            smtp.send_message(m)
            sent += 1
    return sent


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--connections", type=int, default=8)
    a = p.parse_args()
    jobs = [(a.port, w, a.count, a.connections) for w in range(a.connections)]
    with multiprocessing.Pool(a.connections) as pool:
        started = time.perf_counter()
        sent = sum(pool.map(send, jobs))
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "messages": sent,
                "connections": a.connections,
                "seconds": round(seconds, 3),
                "rate_per_s": round(sent / seconds, 1),
            }
        )
    )
    return 0 if sent == a.count else 1


if __name__ == "__main__":
    sys.exit(main())
