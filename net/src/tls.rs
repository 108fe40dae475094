//! TLS for QUIC: rustls with the `ring` provider chosen explicitly (quinn and rustls can pull
//! in both `ring` and `aws-lc-rs`; we build only `ring`), TLS 1.3 only, PEM files from `certs/`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Installs ring as the process-wide rustls provider. Idempotent; call once at start-up.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM in {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read private key {}", path.display()))
}

/// Ack-eliciting packets a peer may receive before it must acknowledge (see
/// [`TransportLimits::transport`]).
pub const ACK_ELICITING_THRESHOLD: u32 = 10;

/// Limits a server applies to each connection. Documented in `PROTOCOL.md`.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Requests a peer may have in flight at once (one bidirectional stream each).
    pub max_bidi_streams: u32,
    /// Unidirectional streams the peer may open towards us.
    pub max_uni_streams: u32,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive probes so that NATs and idle timers stay open.
    pub keep_alive: Duration,
    /// 0-RTT: a server accepts early data, a client may send it on resumed sessions. Early data
    /// can be replayed by an attacker, so whoever enables it must refuse non-idempotent requests
    /// that arrive in it (see PROTOCOL.md).
    pub early_data: bool,
    /// Path MTU discovery (QUIC packets above 1200 bytes once a larger path MTU is confirmed).
    /// Worth it for bulk transfers; an edge's client connections carry small frames, and quinn
    /// grows each connection's send buffer from 1200 to 2400 bytes the first time discovery
    /// raises the MTU, which every idle connection then keeps (BENCHMARKS.md, `idle`).
    pub mtu_discovery: bool,
}

impl TransportLimits {
    pub fn transport(&self) -> Result<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(self.max_bidi_streams.into());
        t.max_concurrent_uni_streams(self.max_uni_streams.into());
        t.max_idle_timeout(Some(
            self.idle_timeout
                .try_into()
                .map_err(|_| anyhow!("idle timeout out of range"))?,
        ));
        t.keep_alive_interval(Some(self.keep_alive));
        if !self.mtu_discovery {
            t.mtu_discovery_config(None);
        }
        // Ask the peer to acknowledge every 10th ack-eliciting packet (or after its ACK delay,
        // at most max(RTT, 25 ms)) instead of every 2nd: on a busy push connection the sender
        // then reads and processes far fewer ACK packets per delivery. Peers without the
        // ACK-frequency extension ignore it.
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
        t.ack_frequency_config(Some(ack));
        Ok(t)
    }
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
    }
    Ok(roots)
}

/// A quinn server config presenting `cert`/`key` for `alpn`. With `client_ca`, peers must
/// present a certificate signed by that CA (mutual TLS); others fail the handshake.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[u8],
    limits: &TransportLimits,
    client_ca: Option<&Path>,
) -> Result<quinn::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .context("cannot build the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .context("certificate and key do not match")?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    if limits.early_data {
        // QUIC allows exactly 0 or u32::MAX here.
        tls.max_early_data_size = u32::MAX;
    }
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport()?));
    Ok(cfg)
}

/// A quinn client config trusting only the CA in `ca` (the cluster's or the deployment's).
/// With `identity` (certificate, key), the client presents it (mutual TLS).
pub fn client_config(
    ca: &Path,
    alpn: &[u8],
    limits: &TransportLimits,
    identity: Option<(&Path, &Path)>,
) -> Result<quinn::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?);
    let mut tls = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .context("client certificate and key do not match")?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_early_data = limits.early_data;
    let crypto = QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport()?));
    Ok(cfg)
}
