#!/usr/bin/env python3
"""SQS queues on the moto server for bench/run's ingest comparison, with boto3. The endpoint is
AWS_ENDPOINT_URL, else MAILROOM_TEST_AWS_ENDPOINT; the region and the throwaway credentials come
from scripts/servers.sh start_moto.

  sqs_queues.py create NAME      creates NAME-dlq and NAME, whose redrive policy moves a message
                                 to NAME-dlq after 8 receives (mailroom's default MAX_ATTEMPTS);
                                 prints NAME's URL
  sqs_queues.py drain URL --out FILE
                                 the queue's consumer during the runs: receives and deletes what
                                 arrives and writes the "id" of every message body to FILE, one a
                                 line, until SIGTERM, then empties the queue and exits. moto's
                                 SendMessage costs time in proportion to the messages the queue
                                 holds (it recomputes the queue's attributes on every call), so a
                                 queue left to fill would slow down whichever target sent more.
  sqs_queues.py check --ids FILE --drained FILE --in-flight-max N
                                 prints one JSON object: accepted_202 (ids wrk received), drained
                                 (messages taken from the queue), missing (ids answered 202 but
                                 never in the queue: must be 0), unanswered (messages without a
                                 202 seen by wrk: requests in flight when a run stopped, at most
                                 N), ok
"""

import argparse
import json
import os
import signal
import sys
import threading

import boto3


def client():
    from botocore.config import Config

    return boto3.client(
        "sqs",
        config=Config(max_pool_connections=64),
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or os.environ["MAILROOM_TEST_AWS_ENDPOINT"],
    )


def create(name: str) -> int:
    sqs = client()
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 8})},
    )["QueueUrl"]
    print(url)
    return 0


def drain(url: str, out: str, threads: int) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = threading.Lock()
    f = open(out, "w")

    sqs = client()  # boto3 clients are thread-safe; creating one is not

    def run() -> None:
        while True:
            # Long polls while the run goes on; once stopped, until the queue answers empty.
            got = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0 if stop.is_set() else 1
            ).get("Messages", [])
            if not got:
                if stop.is_set():
                    return
                continue
            ids = []
            for m in got:
                try:
                    ids.append(str(json.loads(m["Body"])["id"]))
                except (ValueError, KeyError, TypeError):
                    ids.append("not-a-message")
            with lock:
                f.write("".join(i + "\n" for i in ids))
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(got)],
            )

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    f.close()
    return 0


def check(ids_file: str, drained_file: str, in_flight_max: int) -> int:
    with open(ids_file) as f:
        ids = [line.strip() for line in f if line.strip()]
    with open(drained_file) as f:
        drained = [line.strip() for line in f if line.strip()]
    accepted, seen = set(ids), set(drained)
    missing = len(accepted - seen)
    unanswered = len(seen - accepted)
    result = {
        "accepted_202": len(ids),
        "unique_ids": len(accepted),
        "drained": len(drained),
        "received_twice": len(drained) - len(seen),
        "missing": missing,
        "unanswered": unanswered,
        "in_flight_max": in_flight_max,
    }
    result["ok"] = missing == 0 and len(accepted) == len(ids) and unanswered <= in_flight_max
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("name")
    d = sub.add_parser("drain")
    d.add_argument("url")
    d.add_argument("--out", required=True)
    # More threads than this make moto slower still: each arrival wakes every long poll.
    d.add_argument("--threads", type=int, default=2)
    k = sub.add_parser("check")
    k.add_argument("--ids", required=True)
    k.add_argument("--drained", required=True)
    k.add_argument("--in-flight-max", type=int, required=True)
    a = p.parse_args()
    if a.cmd == "create":
        return create(a.name)
    if a.cmd == "drain":
        return drain(a.url, a.out, a.threads)
    return check(a.ids, a.drained, a.in_flight_max)


if __name__ == "__main__":
    sys.exit(main())
