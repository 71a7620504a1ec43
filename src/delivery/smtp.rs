//! `DELIVERY=smtp`: lettre's SMTP client over a small pool of connections to the relay in
//! `SMTP_URL`.
//!
//! `smtp://user:pass@host:587?tls=required` (STARTTLS), `?tls=opportunistic`, `smtps://host:465`
//! (implicit TLS), plain `smtp://host:25`. A private relay CA can be trusted with
//! `&ca_file=/path/ca.pem`.
//!
//! Why mailroom does not use lettre's pooled transport: lettre 0.11 writes a message and its
//! `\r\n.\r\n` terminator in two writes on a socket without `TCP_NODELAY`, so Nagle's algorithm
//! holds the terminator back until the relay's delayed ACK, about 40 ms on Linux: one connection
//! then carries at most ~25 messages a second (`bench/smtp_write_probe.py` measures 44 ms per
//! message against 0.8 ms with `TCP_NODELAY`). The transport has no option for it and its
//! executor trait is sealed, so mailroom opens the TCP connection itself, sets `TCP_NODELAY`,
//! for `smtps://` starts TLS on it (rustls, set up as lettre sets it up for STARTTLS), and hands
//! it to lettre's
//! `AsyncSmtpConnection` (EHLO, STARTTLS, AUTH and the SMTP commands stay lettre's), keeping
//! idle connections in a small pool.
//!
//! Each step of a send has its own time limit: the session and each command
//! `SMTP_TIMEOUT_SECS`, and the relay's answer to the end of the message the ten minutes of RFC
//! 5321 (4.5.3.2.6), because a relay may scan a message, or pass it on, before it answers, and
//! a message it took whose answer was cut off would be sent again at each try. lettre's `send`
//! runs the commands as one call, so mailroom issues them itself with lettre's command types.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::{SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT};

use super::{Delivery, DeliveryError, Pause, Receipt, quota_exhausted};

/// Checks an `SMTP_URL` without connecting: the reason it is wrong, if it is.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("not a URL ({e}); expected smtp://host:port or smtps://host:port"))?;
    if !matches!(parsed.scheme(), "smtp" | "smtps") {
        return Err("expected the scheme smtp:// or smtps://".into());
    }
    if parsed.host_str().is_none() {
        return Err("the URL names no host".into());
    }
    for (k, v) in parsed.query_pairs() {
        match (k.as_ref(), v.as_ref()) {
            ("tls", _) if parsed.scheme() == "smtps" => {
                return Err(
                    "tls= is for STARTTLS on smtp://; smtps:// is TLS from the first byte (for STARTTLS on port 587: smtp://host:587?tls=required)"
                        .into(),
                );
            }
            ("tls", "required" | "opportunistic") | ("ca_file", _) => {}
            ("tls", other) => {
                return Err(format!("tls={other} is not one of required, opportunistic"));
            }
            (other, _) => {
                return Err(format!(
                    "unknown query parameter {other}; accepted: tls, ca_file"
                ));
            }
        }
    }
    Ok(())
}

pub struct SmtpDelivery {
    relay: Direct,
    /// Caps open connections (the pool keeps only idle ones), so a burst of deliveries cannot
    /// open more connections than the relay was promised.
    connections: tokio::sync::Semaphore,
    pool_size: usize,
    /// `SMTP_TIMEOUT_SECS`: the limit of opening a session and of each command (the end of a
    /// message has [`FINAL_REPLY_WITHIN`]).
    send_timeout: Duration,
    /// Set by a relay that says the account's daily quota is used up (SES's SMTP endpoint).
    pause: Pause,
    /// The relay is SES's SMTP endpoint (`email-smtp.REGION.amazonaws.com`), whose send rate
    /// counts recipients, as SES's API does.
    counts_recipients: bool,
}

/// An idle connection is dropped after this long (relays close idle sessions after a minute or
/// more), and checked with NOOP before reuse after `NOOP_AFTER`.
const IDLE_MAX: Duration = Duration::from_secs(50);
const NOOP_AFTER: Duration = Duration::from_secs(5);

/// How long the relay may take to answer the end of a message (RFC 5321, 4.5.3.2.6: at least
/// ten minutes). The message's lease is kept alive meanwhile (`Worker::keep_alive`).
const FINAL_REPLY_WITHIN: Duration = Duration::from_secs(600);

/// How to reach the relay, and the connections to it that are idle.
struct Direct {
    host: String,
    port: u16,
    hello: ClientId,
    /// `smtps://`: TLS from the first byte, to this server name.
    implicit_tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// `None`: plain; `Some((params, true))`: STARTTLS required; `(params, false)`: if offered.
    starttls: Option<(TlsParameters, bool)>,
    credentials: Option<Credentials>,
    connect_timeout: Duration,
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Direct {
    async fn connect(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        let address = (self.host.as_str(), self.port);
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| {
            DeliveryError::Temporary(format!(
                "connecting to the relay {}:{} timed out",
                self.host, self.port
            ))
        })?
        .map_err(|e| {
            DeliveryError::Temporary(format!(
                "cannot connect to the relay {}:{}: {e}",
                self.host, self.port
            ))
        })?;
        tcp.set_nodelay(true)
            .map_err(|e| DeliveryError::Temporary(format!("TCP_NODELAY: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit_tls {
            None => Box::new(tcp),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                    // TLS refusing the session (a certificate that does not verify) is the
                    // setup's to fix, as a refused session is; the network failing, a retry.
                    let refused = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        .is_some_and(setup_refused);
                    let text = format!("TLS with the relay {}:{}: {e}", self.host, self.port);
                    if refused {
                        DeliveryError::Paused(format!(
                            "the session with the relay could not be set up, check SMTP_URL: {text}"
                        ))
                    } else {
                        DeliveryError::Temporary(text)
                    }
                })?;
                Box::new(ImplicitTls(tls))
            }
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| classify(e, Step::Session))?;
        match &self.starttls {
            Some((params, required)) if *required || conn.can_starttls() => {
                conn.starttls(params.clone(), &self.hello)
                    .await
                    .map_err(|e| classify(e, Step::Session))?;
            }
            _ => {}
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(|e| classify(e, Step::Session))?;
        }
        Ok(conn)
    }

    /// An idle connection that still answers, or a new one; and whether it was idle.
    async fn checkout(&self) -> Result<(AsyncSmtpConnection, bool), DeliveryError> {
        loop {
            let idle = self.idle.lock().expect("the pool lock").pop();
            let Some((mut conn, since)) = idle else {
                return Ok((self.connect().await?, false));
            };
            let idle_for = since.elapsed();
            if idle_for < NOOP_AFTER || (idle_for < IDLE_MAX && conn.test_connected().await) {
                return Ok((conn, true));
            }
            conn.abort().await;
        }
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        if !conn.has_broken() {
            self.idle
                .lock()
                .expect("the pool lock")
                .push((conn, Instant::now()));
        }
    }

    /// Sends one message, each step within its limit (`step` for the session and each command,
    /// [`FINAL_REPLY_WITHIN`] for the answer to the message's end).
    async fn send(
        &self,
        email: &lettre::Message,
        step: Duration,
    ) -> Result<Response, DeliveryError> {
        let opening = |what| {
            DeliveryError::Temporary(format!(
                "the relay did not answer within {} s (SMTP_TIMEOUT_SECS) while {what}",
                step.as_secs()
            ))
        };
        let (mut conn, idle) = tokio::time::timeout(step, self.checkout())
            .await
            .map_err(|_| opening("the session was opened"))??;
        let mut sent = transact(&mut conn, email, step).await;
        if idle && matches!(sent, Err(Failure { unsent: true, .. })) {
            // An idle session the relay closed meanwhile (it was reused without a NOOP, having
            // been idle less than NOOP_AFTER): nothing of the message went out, so it is sent
            // on a new session rather than counted as a failed attempt.
            close(conn).await;
            conn = tokio::time::timeout(step, self.connect())
                .await
                .map_err(|_| opening("a new session was opened"))??;
            sent = transact(&mut conn, email, step).await;
        }
        match sent {
            Ok(response) => {
                self.checkin(conn);
                Ok(response)
            }
            Err(failure) => {
                close(conn).await;
                Err(failure.error)
            }
        }
    }
}

/// After a refusal or a timeout a session is in no known state: it is closed (QUIT, briefly
/// waited for) and not reused.
async fn close(mut conn: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.abort()).await;
}

/// Why a message's commands failed, and whether the session was gone before any of them was
/// answered (the first command got no reply at all: nothing of the message was sent).
struct Failure {
    error: DeliveryError,
    unsent: bool,
}

impl From<DeliveryError> for Failure {
    fn from(error: DeliveryError) -> Self {
        Failure {
            error,
            unsent: false,
        }
    }
}

/// An `smtps://` session's stream: TLS (rustls, as lettre's) over mailroom's own TCP
/// connection, with `TCP_NODELAY`, handed to lettre's connection as the stream it takes.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// One message over an open session: MAIL, RCPT for each recipient and DATA, each answered
/// within `step`, then the message, whose end is answered within [`FINAL_REPLY_WITHIN`] (or
/// `step`, if longer). A copy of lettre 0.11's `AsyncSmtpConnection::send`, SMTPUTF8 and
/// 8BITMIME included, with a time limit per step, which lettre's one call cannot have; one
/// difference: a message that needs SMTPUTF8 or 8BITMIME from a relay that offers neither is a
/// permanent failure here (lettre's client error was retried, to the same refusal, up to
/// MAX_ATTEMPTS). mailroom sends ASCII addresses (IDNs in their ASCII form) and encodes bodies,
/// so neither happens to its own messages.
async fn transact(
    conn: &mut AsyncSmtpConnection,
    email: &lettre::Message,
    step: Duration,
) -> Result<Response, Failure> {
    let envelope = email.envelope();
    let body = email.formatted();
    let mut options = Vec::new();
    let non_ascii = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(DeliveryError::Permanent(
                "an address is not ASCII and the relay does not offer SMTPUTF8".into(),
            )
            .into());
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(DeliveryError::Permanent(
                "the message is not ASCII and the relay does not offer 8BITMIME".into(),
            )
            .into());
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let timed_out = |what: &str| {
        DeliveryError::Temporary(format!(
            "the relay did not answer {what} within {} s (SMTP_TIMEOUT_SECS)",
            step.as_secs()
        ))
    };
    let mail = Mail::new(envelope.from().cloned(), options);
    tokio::time::timeout(step, conn.command(mail))
        .await
        .map_err(|_| timed_out("MAIL FROM"))?
        .map_err(|e| Failure {
            unsent: e.status().is_none() && !e.is_client(),
            error: classify(e, Step::Message),
        })?;
    for to in envelope.to() {
        tokio::time::timeout(step, conn.command(Rcpt::new(to.clone(), vec![])))
            .await
            .map_err(|_| timed_out("RCPT TO"))?
            .map_err(|e| classify(e, Step::Message))?;
    }
    tokio::time::timeout(step, conn.command(Data))
        .await
        .map_err(|_| timed_out("DATA"))?
        .map_err(|e| classify(e, Step::Message))?;
    let last = FINAL_REPLY_WITHIN.max(step);
    let response = tokio::time::timeout(last, conn.message(&body))
        .await
        .map_err(|_| {
            DeliveryError::Temporary(format!(
                "the relay did not answer the end of the message within {} s; it may have taken it, and it is tried again",
                last.as_secs()
            ))
        })?
        .map_err(|e| classify(e, Step::Message))?;
    Ok(response)
}

/// The relay's host as a connect and a TLS server name take it: an IPv6 literal without the
/// brackets a URL writes it in (`smtp://[2001:db8::25]`), which neither resolves nor names a
/// server (lettre's own URL parsing keeps them, so it is not used for the host).
fn relay_host(parsed: &url::Url) -> String {
    match parsed.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => String::new(),
    }
}

/// The STARTTLS parameters for the relay: its name, and the private CA in `ca_file` when one is
/// given (for `smtps://`: [`implicit_tls`]).
fn tls_parameters(parsed: &url::Url) -> Result<TlsParameters, String> {
    let mut params = TlsParameters::builder(relay_host(parsed));
    if let Some((ca_file, pem)) = ca_file(parsed)? {
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("ca_file {ca_file}: {e}"))?;
        params = params.add_root_certificate(cert);
    }
    params.build().map_err(|e| format!("TLS settings: {e}"))
}

/// The `ca_file` of `SMTP_URL`, if one is named: its path and what it holds.
fn ca_file(parsed: &url::Url) -> Result<Option<(String, Vec<u8>)>, String> {
    let Some(path) = parsed
        .query_pairs()
        .find(|(k, _)| k == "ca_file")
        .map(|(_, v)| v.into_owned())
    else {
        return Ok(None);
    };
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read ca_file {path}: {e}"))?;
    Ok(Some((path, pem)))
}

/// The TLS settings of an `smtps://` relay: the web's root CAs and the private CA in `ca_file`
/// when one is given, for the relay's own name, as lettre's [`tls_parameters`] for STARTTLS
/// (kept alike: a change to one is a change to the other).
fn implicit_tls(
    parsed: &url::Url,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    ),
    String,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some((ca_file, pem)) = ca_file(parsed)? {
        use rustls::pki_types::pem::PemObject;
        let before = roots.len();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("ca_file {ca_file}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {ca_file}: {e}"))?;
        }
        if roots.len() == before {
            return Err(format!("ca_file {ca_file} holds no certificate"));
        }
    }
    // The provider named here, not the process's default: a library user that installed none
    // gets no panic.
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(relay_host(parsed))
        .map_err(|e| format!("the relay's host is not a TLS server name: {e}"))?;
    Ok((std::sync::Arc::new(config).into(), name))
}

impl SmtpDelivery {
    pub fn new(url: &str, timeout: Duration, pool_size: u32) -> Result<Self, String> {
        check_url(url)?;
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let tls_mode = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|e| format!("SMTP_URL user or password is not UTF-8: {e}"))
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                decode(parsed.username())?,
                decode(password)?,
            )),
            None => None,
        };
        // As lettre does: the URL's path, if any, is the name given in EHLO.
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        let counts_recipients = is_ses_endpoint(&relay_host(&parsed));
        let (implicit_tls, starttls, default_port) = if parsed.scheme() == "smtps" {
            (Some(implicit_tls(&parsed)?), None, SUBMISSIONS_PORT)
        } else {
            match tls_mode.as_deref() {
                Some(mode) => (
                    None,
                    Some((tls_parameters(&parsed)?, mode == "required")),
                    SUBMISSION_PORT,
                ),
                None => (None, None, SMTP_PORT),
            }
        };
        let relay = Direct {
            host: relay_host(&parsed),
            port: parsed.port().unwrap_or(default_port),
            hello,
            implicit_tls,
            starttls,
            credentials,
            connect_timeout: timeout,
            idle: std::sync::Mutex::new(Vec::new()),
        };
        Ok(Self {
            relay,
            connections: tokio::sync::Semaphore::new(pool_size.max(1) as usize),
            pool_size: pool_size.max(1) as usize,
            send_timeout: timeout,
            pause: Pause::default(),
            counts_recipients,
        })
    }
}

/// SES's SMTP endpoints: `email-smtp.REGION.amazonaws.com` (and the FIPS and China names), and
/// their VPC endpoints (`vpce-ID.email-smtp.REGION.vpce.amazonaws.com`).
fn is_ses_endpoint(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let amazon = host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn");
    let ses = host.starts_with("email-smtp.")
        || host.starts_with("email-smtp-fips.")
        || (host.starts_with("vpce-") && host.contains(".email-smtp."));
    amazon && ses
}

/// Where in a send an SMTP failure came, which decides what it says of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Opening a session: TLS (`smtps://`), the greeting, EHLO, STARTTLS, AUTH. No message is
    /// named yet, so a failure there refuses every message alike.
    Session,
    /// A message's own commands (MAIL, RCPT, DATA) and its end.
    Message,
}

/// Whether TLS itself refused the session, as against the network failing under it: lettre
/// reports both as a connection error, with rustls's error somewhere in its sources.
fn tls_refused(e: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return setup_refused(tls);
        }
        source = cause.source();
    }
    false
}

/// A TLS failure that the settings, not the moment, cause: a certificate that does not verify
/// (or none), or no protocol version or cipher suite in common. Other TLS errors (an alert from
/// a sick relay, a corrupt record) are retried like any broken connection, so one bad node
/// behind a relay's load balancer does not pause every worker.
fn setup_refused(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::PeerIncompatible(_)
    )
}

/// Decides what an SMTP failure at `step` means for the message.
///
/// A session the relay refuses (a 5xx greeting: "554 client host blocked"; STARTTLS it does
/// not offer; a certificate that does not verify; credentials it does not take) pauses
/// delivery until the relay takes a session again (the worker's re-check opens one the same
/// way), instead of spending the attempts of each message pulled meanwhile and dead-lettering
/// them all: the setup is the operator's to fix. A 4xx there is still a retry or a throttle,
/// and a refused, dropped or timed-out connection a temporary failure, as DESIGN.md has them.
fn classify(e: lettre::transport::smtp::Error, step: Step) -> DeliveryError {
    let text = e.to_string();
    let code = e.status().map(|c| c.to_string());
    let auth = || {
        DeliveryError::Paused(format!(
            "SMTP authentication failed, check SMTP_URL: {text}"
        ))
    };
    match (code.as_deref(), step) {
        (Some("530" | "534" | "535" | "538"), Step::Session) => auth(),
        (Some(c), Step::Session) if c.starts_with('5') => {
            DeliveryError::Paused(format!("the relay refused the session: {text}"))
        }
        (None, Step::Session) if e.is_client() || e.is_tls() || tls_refused(&e) => {
            DeliveryError::Paused(format!(
                "the session with the relay could not be set up, check SMTP_URL: {text}"
            ))
        }
        // "530 authentication required" to a message's MAIL FROM: the relay's or its
        // credentials' matter, not the message's; retried, never dead at once.
        (Some("530" | "534" | "535" | "538"), _) => DeliveryError::Temporary(format!(
            "SMTP authentication refused, check SMTP_URL: {text}"
        )),
        // SES's SMTP endpoint: "454 Throttling failure: Daily message quota exceeded."
        (Some("454"), _) if quota_exhausted(&text) => DeliveryError::Paused(text),
        // "Too many connections" and provider rate limits: slow down.
        (Some("421" | "454"), _) => DeliveryError::Throttled {
            reason: text,
            retry_after: None,
        },
        _ if e.is_permanent() => DeliveryError::Permanent(text),
        _ => DeliveryError::Temporary(text),
    }
}

#[async_trait]
impl Delivery for SmtpDelivery {
    async fn deliver(&self, email: &lettre::Message) -> Result<Receipt, DeliveryError> {
        let _connection = self
            .connections
            .acquire()
            .await
            .map_err(|_| DeliveryError::Temporary("the SMTP transport is closed".into()))?;
        let sent = self.relay.send(email, self.send_timeout).await;
        if let Err(DeliveryError::Paused(reason)) = &sent {
            self.pause.set("smtp", reason);
        }
        let response = sent?;
        self.pause.sent();
        let text: Vec<&str> = response.message().collect();
        Ok(Receipt {
            detail: format!("{} {}", response.code(), text.join(" ")),
        })
    }

    /// Connects and asks for NOOP. A relay that answers ends a pause: the next message finds out
    /// whether the quota is back (the relay says nothing of it before a send), and a pause that
    /// comes straight back makes the next check wait longer ([`Pause`]).
    async fn check(&self) -> Result<(), DeliveryError> {
        // The whole check has SMTP_TIMEOUT_SECS, as a send has: the connect's own timeout
        // covers the TCP connect only, and a relay that accepts and then says nothing (an
        // implicit-TLS port named with `smtp://`, a stuck relay) would hold it for ever.
        let ask = async {
            let mut conn = self.relay.connect().await?;
            let answered = conn.test_connected().await;
            conn.abort().await;
            if answered {
                Ok(())
            } else {
                Err(DeliveryError::Temporary(
                    "the relay did not answer NOOP".into(),
                ))
            }
        };
        let answered = tokio::time::timeout(self.send_timeout, ask)
            .await
            .unwrap_or_else(|_| {
                Err(DeliveryError::Temporary(format!(
                    "the relay did not answer within {} s (SMTP_TIMEOUT_SECS)",
                    self.send_timeout.as_secs()
                )))
            });
        if answered.is_ok() {
            self.pause.clear("smtp");
        }
        answered
    }

    fn paused(&self) -> Option<String> {
        self.pause.get()
    }

    fn recheck_in(&self) -> Duration {
        self.pause.recheck_in()
    }

    fn max_in_flight(&self) -> Option<usize> {
        Some(self.pool_size)
    }

    /// One slot per recipient through SES's SMTP endpoint, as its MaxSendRate counts them; one
    /// per message through any other relay.
    fn rate_cost(&self, email: &lettre::Message) -> u32 {
        if self.counts_recipients {
            super::recipients_cost(email)
        } else {
            1
        }
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SMTP_URL mistakes are caught at start-up with a reason.
    #[test]
    fn url_checks() {
        assert!(check_url("smtp://user:pw@relay.example.com:587?tls=required").is_ok());
        assert!(check_url("smtps://relay.example.com").is_ok());
        assert!(check_url("http://relay").unwrap_err().contains("scheme"));
        assert!(
            check_url("smtp://relay?tls=always")
                .unwrap_err()
                .contains("tls=always")
        );
        assert!(
            check_url("smtp://relay?colour=red")
                .unwrap_err()
                .contains("colour")
        );
    }

    /// `tls=` with `smtps://` is refused (it is for STARTTLS), and so is a `ca_file` that holds no
    /// certificate: both would otherwise show only at the first send, as a paused delivery.
    #[test]
    fn smtps_settings_that_cannot_work_are_refused() {
        let err = check_url("smtps://relay.example.com:587?tls=required").expect_err("refused");
        assert!(err.contains("smtp://host:587?tls=required"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("written");
        let built = SmtpDelivery::new(
            &format!("smtps://relay.example.com?ca_file={}", empty.display()),
            Duration::from_secs(1),
            1,
        );
        let err = built.err().expect("refused");
        assert!(err.contains("holds no certificate"), "{err}");
    }

    /// Through SES's SMTP endpoint (or its VPC endpoint) a message costs a slot per recipient,
    /// as SES counts them; through another relay, one.
    #[tokio::test]
    async fn ses_smtp_endpoints_count_recipients() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let email = lettre::Message::builder()
            .from("a@example.com".parse().expect("address"))
            .to("b@example.com".parse().expect("address"))
            .to("c@example.com".parse().expect("address"))
            .bcc("d@example.com".parse().expect("address"))
            .subject("s")
            .body(String::from("t"))
            .expect("builds");
        let cost = |url: &str| {
            SmtpDelivery::new(url, Duration::from_secs(1), 1)
                .expect("a relay URL")
                .rate_cost(&email)
        };
        assert_eq!(
            cost("smtp://u:p@email-smtp.eu-west-1.amazonaws.com:587?tls=required"),
            3
        );
        assert_eq!(cost("smtps://u:p@EMAIL-SMTP.us-east-1.amazonaws.com"), 3);
        assert_eq!(cost("smtp://relay.example.com:25"), 1);
        assert_eq!(cost("smtp://email-smtp.example.com:25"), 1);
        assert_eq!(
            cost("smtp://u:p@vpce-0a1b2c3d-e4f5g6h7.email-smtp.eu-west-1.vpce.amazonaws.com:587"),
            3
        );
    }

    /// An IPv6 literal is the relay's address and TLS name without its brackets; implicit TLS
    /// to one builds (it stopped start-up with "TLS settings" before).
    #[tokio::test]
    async fn ipv6_literals() {
        let host = |u: &str| relay_host(&url::Url::parse(u).expect("a URL"));
        assert_eq!(host("smtp://[2001:db8::25]:25"), "2001:db8::25");
        assert_eq!(host("smtp://relay.example.com"), "relay.example.com");
        assert_eq!(host("smtp://192.0.2.25:25"), "192.0.2.25");
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let built = SmtpDelivery::new("smtps://u:p@[2001:db8::25]", Duration::from_secs(1), 1);
        assert!(built.is_ok(), "{:?}", built.err());
    }
}
