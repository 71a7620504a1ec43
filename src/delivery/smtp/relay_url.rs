//! `SMTP_URL`: what it may say, and the relay's name and TLS settings it gives.

use lettre::transport::smtp::client::{Certificate, TlsParameters};

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

/// The relay's host as a connect and a TLS server name take it: an IPv6 literal without the
/// brackets a URL writes it in (`smtp://[2001:db8::25]`), which neither resolves nor names a
/// server (lettre's own URL parsing keeps them, so it is not used for the host).
pub(super) fn relay_host(parsed: &url::Url) -> String {
    match parsed.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => String::new(),
    }
}

/// The STARTTLS parameters for the relay: its name, and the private CA in `ca_file` when one is
/// given (for `smtps://`: [`implicit_tls`]).
pub(super) fn tls_parameters(parsed: &url::Url) -> Result<TlsParameters, String> {
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
pub(super) fn implicit_tls(
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
