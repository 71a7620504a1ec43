#!/usr/bin/env python3
"""Writes --count native messages as JSONL (the input of `mailroom send --file`), for bench/run.

Each message has one recipient at example.com (the local relay accepts any), a distinct subject and
a short text body, about the size of a transactional notification.
"""

import argparse
import json
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--tag", default="bench")
    a = p.parse_args()
    out = sys.stdout
    for i in range(a.count):
        out.write(
            json.dumps(
                {
                    "from": "Bench <bench@example.com>",
                    "to": [f"rcpt{i % 100}@example.com"],
                    "subject": f"{a.tag} message {i}",
                    "text": f"Benchmark message {i} from bench/run.\n",
                }
            )
        )
        out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
