//! WebTransport: browsers join rooms on the edge's own UDP port.
//!
//! Browsers cannot open raw QUIC connections, but they speak QUIC through WebTransport
//! (HTTP/3). The edge's one quinn endpoint offers two ALPNs, `roomcast/1` and `h3`, and each
//! connection is dispatched by the one negotiated ([`is_h3`]): `roomcast/1` goes straight to the
//! session driver, `h3` first completes the HTTP/3 `CONNECT` of a WebTransport session at
//! [`PATH`] (web-transport-quinn adopts the quinn connection) and then goes to the *same* driver
//! ([`crate::transport::Conn::Web`]): same frames, same stream layout, same core. A browser member
//! and a native member are the same kind of member.
//!
//! Certificates: rustls picks the certificate by the ALPNs the client offers (`ByAlpn`), so
//! browsers can get their own (`--webtransport-cert`), e.g. the short-lived self-signed one the
//! dev stack makes, which a browser accepts through `serverCertificateHashes` (ECDSA P-256,
//! valid at most 14 days). With `--webtransport-pin` the gate announces its SHA-256. In
//! production, leave both out: browsers then get `--cert`, which must come from a public CA.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use quinn::crypto::rustls::QuicServerConfig;
use roomcast_net::tls::{self, TransportLimits};
use roomcast_protocol::protocol::{WebTransportEntry, CLIENT_ALPN};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::state::EdgeState;

/// The path of the WebTransport session URL: `https://host:port/roomcast`.
pub const PATH: &str = "/roomcast";
/// The HTTP/3 ALPN.
pub const H3_ALPN: &[u8] = b"h3";
/// Unidirectional streams a client may open: an HTTP/3 peer needs 3 (its control stream and the
/// two QPACK streams). It is announced in the handshake to every client, because a browser
/// resuming with 0-RTT refuses a server whose limit is lower than the one it remembers; a native
/// (`roomcast/1`) client that opens one is closed with `close::PROTOCOL_ERROR` (session.rs), and
/// gets no further credit.
pub const H3_UNI_STREAMS: u32 = 3;

#[derive(Debug, Clone, Args)]
pub struct WebTransportArgs {
    /// Certificate (PEM) presented to browsers (WebTransport, ALPN h3); defaults to --cert.
    #[arg(
        long,
        env = "ROOMCAST_WEBTRANSPORT_CERT",
        requires = "webtransport_key"
    )]
    pub webtransport_cert: Option<PathBuf>,

    /// Private key (PEM) of --webtransport-cert.
    #[arg(
        long,
        env = "ROOMCAST_WEBTRANSPORT_KEY",
        requires = "webtransport_cert"
    )]
    pub webtransport_key: Option<PathBuf>,

    /// Development: announce the SHA-256 of the WebTransport certificate in gate answers, for
    /// browsers' `serverCertificateHashes` (self-signed ECDSA P-256, valid <= 14 days).
    #[arg(long, env = "ROOMCAST_WEBTRANSPORT_PIN")]
    pub webtransport_pin: bool,

    /// Offer `roomcast/1` only: no WebTransport.
    #[arg(long, env = "ROOMCAST_NO_WEBTRANSPORT")]
    pub no_webtransport: bool,
}

/// What the gate tells browsers about this edge's WebTransport side.
#[derive(Debug, Clone)]
pub struct Announce {
    /// Lowercase hex SHA-256 of the certificate, with `--webtransport-pin`.
    pub certificate_hash: Option<String>,
}

impl Announce {
    /// The entry for an edge at `host:port` (every edge of a deployment presents the same
    /// WebTransport certificate, so this edge's hash is the chosen edge's too).
    pub fn entry(&self, host: &str, port: u16) -> WebTransportEntry {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        WebTransportEntry {
            url: format!("https://{host}:{port}{PATH}"),
            certificate_hash: self.certificate_hash.clone(),
        }
    }
}

/// Chooses the certificate by ALPN: a client offering `h3` and not `roomcast/1` is a browser.
#[derive(Debug)]
struct ByAlpn {
    native: Arc<CertifiedKey>,
    web: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByAlpn {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (mut h3, mut native) = (false, false);
        for p in hello.alpn().into_iter().flatten() {
            h3 |= p == H3_ALPN;
            native |= p == CLIENT_ALPN;
        }
        Some(if h3 && !native {
            self.web.clone()
        } else {
            self.native.clone()
        })
    }
}

fn certified_key(
    provider: &rustls::crypto::CryptoProvider,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Arc<CertifiedKey>, Vec<u8>)> {
    let chain = tls::load_certs(cert)?;
    let leaf = chain[0].to_vec();
    let signing = provider
        .key_provider
        .load_private_key(tls::load_key(key)?)
        .with_context(|| format!("unusable private key {}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .with_context(|| format!("{} and {} do not match", cert.display(), key.display()))?;
    Ok((Arc::new(ck), leaf))
}

/// The client endpoint's server config offering `roomcast/1` and `h3`, and what the gate
/// announces about WebTransport.
pub fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    args: &WebTransportArgs,
    limits: &TransportLimits,
) -> Result<(quinn::ServerConfig, Announce)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (native, _) = certified_key(&provider, cert, key)?;
    let (web, leaf) = match (&args.webtransport_cert, &args.webtransport_key) {
        (Some(c), Some(k)) => certified_key(&provider, c, k)?,
        _ => certified_key(&provider, cert, key)?,
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByAlpn { native, web }));
    // Native first: a client offering both gets the native protocol.
    tls.alpn_protocols = vec![CLIENT_ALPN.to_vec(), H3_ALPN.to_vec()];
    if limits.early_data {
        // QUIC allows exactly 0 or u32::MAX here. WebTransport never uses it (see session.rs).
        tls.max_early_data_size = u32::MAX;
    }
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport()?));
    let announce = Announce {
        certificate_hash: args.webtransport_pin.then(|| sha256_hex(&leaf)),
    };
    Ok((cfg, announce))
}

/// Lowercase hex SHA-256, as browsers' `serverCertificateHashes` take it (after hex decoding).
pub fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the handshake negotiated HTTP/3.
pub fn is_h3(handshake: Option<Box<dyn std::any::Any>>) -> bool {
    handshake
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == H3_ALPN)
}

/// Completes an HTTP/3 connection's WebTransport session at [`PATH`], for the session driver.
/// Anything else (another path, no CONNECT within the handshake timeout) is refused: `None`.
pub async fn accept(
    state: &EdgeState,
    conn: quinn::Connection,
) -> Option<web_transport_quinn::Session> {
    let request = match tokio::time::timeout(
        state.cfg.handshake_timeout(),
        web_transport_quinn::Request::accept(conn.clone()),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!("not a WebTransport session: {e}");
            conn.close(0u32.into(), b"not a WebTransport session");
            return None;
        }
        Err(_) => {
            conn.close(0u32.into(), b"no WebTransport CONNECT in time");
            return None;
        }
    };
    if request.url.path() != PATH {
        tracing::debug!(url = %request.url, "WebTransport session at an unknown path");
        let _ = request
            .reject(web_transport_quinn::http::StatusCode::NOT_FOUND)
            .await;
        // Let the answer reach the client (it closes on reading it) before the connection goes.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
        conn.close(0u32.into(), b"no WebTransport session here");
        return None;
    }
    match request.ok().await {
        Ok(session) => Some(session),
        Err(e) => {
            tracing::debug!("WebTransport session not established: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_entry_urls() {
        let a = Announce {
            certificate_hash: Some("ab".into()),
        };
        assert_eq!(
            a.entry("127.0.0.1", 7001).url,
            "https://127.0.0.1:7001/roomcast"
        );
        assert_eq!(a.entry("::1", 7001).url, "https://[::1]:7001/roomcast");
        assert_eq!(a.entry("h", 1).certificate_hash.as_deref(), Some("ab"));
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
