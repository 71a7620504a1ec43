"""The queue consumer as a Python team builds it with Celery, for bench/run's send-rate comparison.

A Redis broker (BASELINE_BROKER_URL) and one task, `send_email`, with `rate_limit="7/s"`
(BASELINE_RATE_LIMIT), that sends each message with smtplib to the SMTP relay at
BASELINE_SMTP_HOST:BASELINE_SMTP_PORT: a new connection per message, as most such tasks do.
Acknowledged after the task ran (`task_acks_late`, prefetch 1), the setting teams pick so that a
crash does not lose what was taken. No result backend.

Workers, one per host or container as such a service is scaled out (bench/run starts three):

  celery -A celery_app worker --concurrency 1 --hostname w1@%h

Celery's rate_limit is enforced by each worker's consumer, not across workers: three workers send
up to three times the limit. Enqueue N messages with:

  python3 celery_app.py enqueue N
"""

import os
import smtplib
import sys
from email.message import EmailMessage

from celery import Celery

app = Celery("baseline", broker=os.environ.get("BASELINE_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

SMTP_HOST = os.environ.get("BASELINE_SMTP_HOST", "127.0.0.1")
SMTP_PORT = int(os.environ.get("BASELINE_SMTP_PORT", "25"))


@app.task(
    name="send_email",
    rate_limit=os.environ.get("BASELINE_RATE_LIMIT", "7/s"),
    autoretry_for=(smtplib.SMTPException, OSError),
    retry_backoff=True,
    max_retries=8,
)
def send_email(message_id: str, sender: str, to: str, subject: str, text: str) -> None:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["X-Baseline-Id"] = message_id
    msg.set_content(text)
    with smtplib.SMTP(SMTP_HOST, SMTP_PORT, timeout=10) as smtp:
        smtp.send_message(msg)


def enqueue(n: int) -> None:
    """Publishes n messages like bench/messages.py's, each with a distinct id."""
    with app.producer_pool.acquire(block=True) as producer:
        for i in range(n):
            send_email.apply_async(
                args=(f"celery-{i}", "Bench <bench@example.com>", f"rcpt{i % 100}@example.com",
                      f"bench message {i}", f"Benchmark message {i} from bench/run.\n"),
                producer=producer,
            )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "enqueue":
        enqueue(int(sys.argv[2]))
    else:
        sys.exit("usage: celery_app.py enqueue N")
