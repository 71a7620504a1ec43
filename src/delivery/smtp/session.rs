//! Sessions with the relay: opened on mailroom's own TCP connections (implicit TLS by rustls for
//! `smtps://`, STARTTLS and AUTH by lettre), kept in a small idle pool, and one message sent over
//! one, each step within its time limit.

use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::classify::{Step, classify, setup_refused};
use crate::delivery::DeliveryError;

/// An idle connection is dropped after this long (relays close idle sessions after a minute or
/// more), and checked with NOOP before reuse after `NOOP_AFTER`.
const IDLE_MAX: Duration = Duration::from_secs(50);
const NOOP_AFTER: Duration = Duration::from_secs(5);

/// How long the relay may take to answer the end of a message (RFC 5321, 4.5.3.2.6: at least
/// ten minutes). The message's lease is kept alive meanwhile (`Worker::keep_alive`).
pub(super) const FINAL_REPLY_WITHIN: Duration = Duration::from_secs(600);

/// How to reach the relay, and the connections to it that are idle.
pub(super) struct Direct {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) hello: ClientId,
    /// `smtps://`: TLS from the first byte, to this server name.
    pub(super) implicit_tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// `None`: plain; `Some((params, true))`: STARTTLS required; `(params, false)`: if offered.
    pub(super) starttls: Option<(TlsParameters, bool)>,
    pub(super) credentials: Option<Credentials>,
    pub(super) connect_timeout: Duration,
    pub(super) idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Direct {
    pub(super) async fn connect(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
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
    pub(super) async fn send(
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
