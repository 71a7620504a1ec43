//! `mailroom send`: one message from the command line, or every line of a JSONL file, read as a
//! stream and queued in chunks.

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use uuid::Uuid;

use super::SendArgs;
use crate::config::Settings;
use crate::message::{CompatEmail, Content, Message, NativeEmail, NativeRules, strict_json};
use crate::startup::Backends;
use crate::store::{Acceptance, Accepted};

pub(super) async fn send(settings: Settings, args: SendArgs) -> anyhow::Result<()> {
    // A line is one request body: the API's limit holds for it too.
    let max_line = settings.max_body_bytes;
    let backends = Backends::build(settings).await?;
    backends.load_templates()?;
    let Some(path) = args.file else {
        let variables: Option<Value> = args
            .variables
            .as_deref()
            .map(strict_json::from_str)
            .transpose()
            .map_err(|e| anyhow::anyhow!("Invalid message: --variables is not JSON: {e}"))?;
        let value = json!({
            "from": args.from, "to": args.to, "subject": args.subject.unwrap_or_default(),
            "text": args.text, "html": args.html,
            "template": args.template, "variables": variables, "send_at": args.send_at,
        });
        let value = strip_nulls(value);
        let message =
            parse_line(value, &backends).map_err(|e| anyhow::anyhow!("Invalid message: {e}"))?;
        let id = message.id;
        backends
            .intake
            .accept(Acceptance {
                messages: vec![message],
                idempotency: None,
            })
            .await?;
        println!("{id}");
        return Ok(());
    };
    // Read as a stream: a file of millions of messages needs no more memory than a chunk of
    // them, and a line over the limit is counted and skipped without being held.
    let (mut reader, length): (Box<dyn AsyncBufRead + Unpin + Send>, Option<u64>) =
        if path.as_os_str() == "-" {
            (
                Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
                None,
            )
        } else {
            let file = tokio::fs::File::open(&path)
                .await
                .with_context(|| format!("Failed to open {}", path.display()))?;
            let length = file.metadata().await.ok().map(|m| m.len());
            (Box::new(tokio::io::BufReader::new(file)), length)
        };
    let bar = match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} read, {msg} (eta {eta})")
                .expect("the template is valid"),
        ),
        None => ProgressBar::no_length().with_style(
            ProgressStyle::with_template("{spinner} {bytes} read, {msg}")
                .expect("the template is valid"),
        ),
    };
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut chunk = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        let read = read_line(&mut reader, max_line, &mut buf)
            .await
            .with_context(|| format!("Failed to read line {} of the file", n + 1))?;
        let Some((line, bytes)) = read else { break };
        n += 1;
        bar.inc(bytes);
        let parsed = match line {
            Line::Text(text) if text.trim().is_empty() => continue,
            Line::Text(text) => strict_json::from_str(&text)
                .map_err(|e| not_json(&e))
                .and_then(|v| parse_line(with_sender(v, args.from.as_deref()), &backends)),
            Line::TooLong => Err(format!(
                "is {bytes} bytes; the limit is MAX_BODY_BYTES ({max_line} bytes), as for a request"
            )),
            Line::NotUtf8 => Err("is not UTF-8".to_string()),
        };
        match parsed {
            Ok(m) => chunk.push((n, m)),
            Err(e) => {
                rejected += 1;
                bar.suspend(|| eprintln!("line {n}: {e}"));
            }
        }
        if chunk.len() == QUEUE_CHUNK {
            let not_queued = queue_chunk(&backends, &mut chunk, n, &bar).await?;
            accepted += QUEUE_CHUNK as u64 - not_queued;
            rejected += not_queued;
            bar.set_message(format!("{accepted} queued"));
        }
    }
    // What is left after the last line (which may be blank or rejected).
    let k = chunk.len() as u64;
    let not_queued = queue_chunk(&backends, &mut chunk, n, &bar).await?;
    accepted += k - not_queued;
    rejected += not_queued;
    bar.finish_and_clear();
    println!("{accepted} queued, {rejected} rejected");
    if rejected > 0 {
        bail!("{rejected} line(s) were rejected");
    }
    Ok(())
}

/// A line that is not JSON, said of the line (serde_json counts the line's own lines, always 1
/// here: its "at line 1 column 7" would contradict the file's line number).
fn not_json(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(what, _)| what);
    if e.is_syntax() || e.is_eof() {
        format!("is not valid JSON: {what} at column {}", e.column())
    } else {
        format!("{what} (at column {})", e.column())
    }
}

/// A native message of `send --file` that names no sender takes the one of `--from`.
fn with_sender(mut value: Value, from: Option<&str>) -> Value {
    if let (Some(from), Value::Object(fields)) = (from, &mut value)
        && !fields.contains_key("data")
        && !fields.contains_key("from")
    {
        fields.insert("from".into(), Value::from(from));
    }
    value
}

/// One line of a JSONL file, without its line end.
enum Line {
    Text(String),
    /// Longer than the limit: skipped, not kept.
    TooLong,
    NotUtf8,
}

/// Reads the next line holding at most `max` bytes of it in memory (`buf` is reused); answers
/// the line and how many bytes it took from the reader, or `None` at the end.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(Line, u64)>> {
    buf.clear();
    // One byte over the limit tells a line at the limit (its line end read) from a longer one.
    let n = (&mut *reader)
        .take(max as u64 + 2)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    let mut taken = n as u64;
    let ended = buf.last() == Some(&b'\n');
    if ended {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > max {
        // The rest of the line, up to and with its line end, goes unread into memory.
        if !ended {
            loop {
                let available = reader.fill_buf().await?;
                if available.is_empty() {
                    break;
                }
                let (used, end) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (available.len(), false),
                };
                reader.consume(used);
                taken += used as u64;
                if end {
                    break;
                }
            }
        }
        return Ok(Some((Line::TooLong, taken)));
    }
    let line = match String::from_utf8(std::mem::take(buf)) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::NotUtf8,
    };
    Ok(Some((line, taken)))
}

/// Messages of `send --file` accepted together: one transaction (and one queue call) each.
const QUEUE_CHUNK: usize = 100;

/// Accepts the messages in `chunk` (emptying it), each with its line number, read up to line
/// `through`. Answers how many the queue did not take (each named by its line on stderr).
async fn queue_chunk(
    backends: &Backends,
    chunk: &mut Vec<(usize, Message)>,
    through: usize,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    if chunk.is_empty() {
        return Ok(0);
    }
    let (lines, messages): (Vec<usize>, Vec<Message>) = std::mem::take(chunk).into_iter().unzip();
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let accepted = backends
        .intake
        .accept(Acceptance {
            messages,
            idempotency: None,
        })
        .await
        .with_context(|| format!("Failed to queue the messages up to line {through}"))?;
    let Accepted::Partly(failed) = accepted else {
        return Ok(0);
    };
    for (id, error) in &failed {
        let line = ids.iter().position(|i| i == id).map_or(0, |i| lines[i]);
        bar.suspend(|| eprintln!("line {line}: {error}"));
    }
    Ok(failed.len() as u64)
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        v => v,
    }
}

/// Parses one JSONL line: a native message, or a compat body.
fn parse_line(value: Value, backends: &Backends) -> Result<Message, String> {
    let content = if value.get("data").is_some() {
        let (_, fields) = CompatEmail::parse(&value).map_err(|e| e.to_string())?;
        Content::Compat(fields.validate().map_err(|e| e.to_string())?)
    } else {
        let templates = backends.templates.current();
        let rules = NativeRules {
            default_from: backends.settings.default_from.as_ref(),
            templates: &templates,
        };
        let email = NativeEmail::parse(value, "", rules).map_err(|e| e.to_string())?;
        Content::Native(Box::new(email))
    };
    let message = Message::new(content);
    // Over the queue's size limit (SQS, Kafka): refused as this line, as the API refuses it as
    // its own request or batch entry, not as the whole chunk it would be queued with.
    backends
        .intake
        .queue
        .check(&message)
        .map_err(|e| e.to_string())?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line that is not JSON is said to be so, at its column; serde_json's "line 1" of the
    /// line itself is left out (the file's line number goes before it).
    #[test]
    fn a_line_that_is_not_json_says_so() {
        let e = strict_json::from_str("{\"to\": oops}").expect_err("not JSON");
        assert_eq!(
            not_json(&e),
            "is not valid JSON: expected value at column 8"
        );
        let e = strict_json::from_str("{\"a\": 1, \"a\": 2}").expect_err("twice");
        let said = not_json(&e);
        assert!(
            said.starts_with("the key \"a\" is given twice") && !said.contains("line"),
            "{said}"
        );
    }

    /// Every line of `input` as `read_line` gives it, with a limit of 4 bytes.
    async fn lines_of(input: &[u8]) -> Vec<(String, u64)> {
        let mut reader = tokio::io::BufReader::with_capacity(3, input);
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        while let Some((line, taken)) = read_line(&mut reader, 4, &mut buf).await.expect("read") {
            let shown = match line {
                Line::Text(text) => text,
                Line::TooLong => "<too long>".into(),
                Line::NotUtf8 => "<not utf-8>".into(),
            };
            out.push((shown, taken));
        }
        out
    }

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_whole_and_the_next_read_as_usual() {
        let got = lines_of(b"abcd\nabcde\r\nabcdefghijk\n\xff\r\nab\r\n\nxyz").await;
        let want = [
            ("abcd", 5),
            ("<too long>", 7),
            ("<too long>", 12),
            ("<not utf-8>", 3),
            ("ab", 4),
            ("", 1),
            ("xyz", 3),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(l, n)| (l.to_string(), *n)).collect();
        assert_eq!(got, want);
        assert_eq!(lines_of(b"abcdefgh").await, [("<too long>".into(), 8)]);
        assert_eq!(lines_of(b"abcd\r\n").await, [("abcd".into(), 6)]);
    }
}
