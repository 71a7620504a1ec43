#!/usr/bin/env python3
"""Checks that every 202 mailroom answered during the ingest benchmark is in its database.

--ids holds the message_id of every 202 wrk received (written by bench/post.lua), --db is the
SQLite file of the `mailroom api` that answered them (read after it stopped). Prints one JSON
object:

  accepted_202   202 responses wrk counted (lines in --ids)
  unique_ids     distinct ids among them
  rows           messages in the database
  queued         rows in the database queue (null where the database has no queue table: the
                 FastAPI + SQLite baseline keeps its messages in one table)
  missing        ids answered 202 but not in the database (must be 0: "every 202 durable")
  unanswered     rows with no 202 seen by wrk: requests in flight when wrk stopped each run
                 (committed, but their answer was never read), at most --in-flight-max
"""

import argparse
import json
import sqlite3
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ids", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--in-flight-max", type=int, required=True)
    a = p.parse_args()
    with open(a.ids) as f:
        ids = [line.strip() for line in f if line.strip()]
    unique = set(ids)
    con = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    rows = {r[0] for r in con.execute("SELECT id FROM messages")}
    try:
        queued = con.execute("SELECT count(*) FROM queue").fetchone()[0]
    except sqlite3.OperationalError:
        queued = None
    con.close()
    missing = len(unique - rows)
    unanswered = len(rows - unique)
    ok = missing == 0 and len(unique) == len(ids) and unanswered <= a.in_flight_max
    print(
        json.dumps(
            {
                "accepted_202": len(ids),
                "unique_ids": len(unique),
                "rows": len(rows),
                "queued": queued,
                "missing": missing,
                "unanswered": unanswered,
                "in_flight_max": a.in_flight_max,
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
