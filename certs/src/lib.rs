//! Development certificates for roomcast, generated with rcgen (ring backend).
//!
//! [`generate`] writes one self-signed development CA (`ca.pem`, `ca.key`) and two leaf
//! certificates signed by it, each with its own key pair:
//!
//! - `edge.pem` / `edge.key`: presented by edges to clients, and by edges to backends as their
//!   client certificate (mutual TLS);
//! - `backend.pem` / `backend.key`: presented by backends to edges.
//!
//! Clients, edges and backends trust `ca.pem`. Leaf certificates are valid for the given hosts
//! (DNS names become DNS SANs, IP addresses become IP SANs; [`default_hosts`] is the loopback
//! set) and carry both the server and client authentication usages. Everything is valid for one
//! year, starting one day in the past to tolerate clock skew.
//!
//! Private keys (`*.key`) are written with mode 0600 on unix and are git-ignored: never commit
//! them. [`ensure`] reuses the files of a directory when they are all present, so tests and the
//! dev stack generate them only once. Production deployments bring their own PKI and pass the
//! files with `--cert`, `--key` and `--ca`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Paths of the generated files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// `ca.pem`: the development CA, trusted by clients, edges and backends.
    pub ca_cert: PathBuf,
    /// `ca.key`: the CA's private key; only this generator uses it.
    pub ca_key: PathBuf,
    /// `edge.pem`: presented by edges (to clients, and to backends for mutual TLS).
    pub edge_cert: PathBuf,
    /// `edge.key`: the edges' private key.
    pub edge_key: PathBuf,
    /// `backend.pem`: presented by backends to edges.
    pub backend_cert: PathBuf,
    /// `backend.key`: the backends' private key.
    pub backend_key: PathBuf,
}

impl Generated {
    fn in_dir(dir: &Path) -> Generated {
        Generated {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            edge_cert: dir.join("edge.pem"),
            edge_key: dir.join("edge.key"),
            backend_cert: dir.join("backend.pem"),
            backend_key: dir.join("backend.key"),
        }
    }

    /// Every path, in the order they are written.
    pub fn all(&self) -> [&Path; 6] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.edge_cert,
            &self.edge_key,
            &self.backend_cert,
            &self.backend_key,
        ]
    }
}

/// Names the leaf certificates are valid for by default: `localhost`, `127.0.0.1` and `::1`.
pub fn default_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// Which of the files [`generate`] writes already exist in `dir`.
pub fn existing(dir: &Path) -> Vec<PathBuf> {
    Generated::in_dir(dir)
        .all()
        .into_iter()
        .filter(|p| p.exists())
        .map(Path::to_path_buf)
        .collect()
}

/// Returns the certificates in `dir` if they all exist; otherwise generates them (for
/// [`default_hosts`]), replacing any partial set.
pub fn ensure(dir: &Path) -> Result<Generated> {
    let g = Generated::in_dir(dir);
    if g.all().iter().all(|p| p.exists()) {
        return Ok(g);
    }
    generate(dir, &default_hosts())
}

/// Generates a new CA and edge/backend certificates valid for `hosts` (DNS names or IP
/// addresses) into `dir`, creating it if needed and replacing any files there.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<Generated> {
    anyhow::ensure!(!hosts.is_empty(), "at least one host name is needed");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let g = Generated::in_dir(dir);

    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let ca = ca_params()?;
    let ca_cert = ca.self_signed(&ca_key).context("cannot sign the CA")?;
    write(&g.ca_cert, &ca_cert.pem(), false)?;
    write(&g.ca_key, &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    for (role, cert_path, key_path) in [
        ("edge", &g.edge_cert, &g.edge_key),
        ("backend", &g.backend_cert, &g.backend_key),
    ] {
        let key = KeyPair::generate().with_context(|| format!("cannot generate the {role} key"))?;
        let cert = leaf_params(role, hosts)?
            .signed_by(&key, &issuer)
            .with_context(|| format!("cannot sign the {role} certificate"))?;
        write(cert_path, &cert.pem(), false)?;
        write(key_path, &key.serialize_pem(), true)?;
    }
    Ok(g)
}

/// Days a WebTransport development certificate is valid: browsers accept a certificate pinned
/// through `serverCertificateHashes` only if it is valid for at most 14 days.
pub const WEBTRANSPORT_DAYS: u32 = 13;

/// Writes a fresh self-signed certificate for the edges' WebTransport side into `dir`
/// (`webtransport.pem`, `webtransport.key`): ECDSA P-256, valid [`WEBTRANSPORT_DAYS`] from one
/// hour ago, as browsers require of a certificate pinned by hash. Generated anew each time (it
/// is cheap and never outlives a development run by much). Returns (certificate, key) paths.
pub fn generate_webtransport(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (cert_path, key_path) = (dir.join("webtransport.pem"), dir.join("webtransport.key"));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("cannot generate the WebTransport key")?;
    let mut p = leaf_params("webtransport", hosts)?;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = date_time_ymd(1970, 1, 1) + Duration::from_secs(since_epoch.as_secs());
    p.not_before = now - Duration::from_secs(3600);
    p.not_after = p.not_before + WEBTRANSPORT_DAYS * DAY;
    let cert = p
        .self_signed(&key)
        .context("cannot sign the WebTransport certificate")?;
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok((cert_path, key_path))
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = name("roomcast development CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut p);
    Ok(p)
}

/// Leaf parameters: rcgen turns each host that parses as an IP address into an IP SAN, and the
/// others into DNS SANs.
fn leaf_params(role: &str, hosts: &[String]) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(hosts.to_vec())
        .with_context(|| format!("bad host name in {hosts:?}"))?;
    p.distinguished_name = name(&format!("roomcast {role}"));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut p);
    Ok(p)
}

/// One year, starting one day ago (clock skew between machines).
fn set_validity(p: &mut CertificateParams) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Whole seconds: X.509 times have no fractions.
    let now = date_time_ymd(1970, 1, 1) + Duration::from_secs(since_epoch.as_secs());
    p.not_before = now - DAY;
    p.not_after = p.not_before + 365 * DAY;
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "roomcast development");
    dn
}

/// Writes atomically (temporary file + rename) so that a concurrent reader never sees half a
/// file; private keys get mode 0600 before they hold anything.
fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    use std::io::Write;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let _ = fs::remove_file(&tmp); // a leftover of a crashed run with the same pid
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| {
            fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::SanType;

    /// A unique temporary directory, removed when dropped (even if the test panics).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            TempDir(std::env::temp_dir().join(format!(
                "roomcast-certs-test-{}-{nanos:x}",
                std::process::id()
            )))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn generates_pem_files_and_ensure_keeps_them() {
        let tmp = TempDir::new();
        let dir = tmp.0.join("nested");
        let g = generate(&dir, &default_hosts()).unwrap();
        assert_eq!(existing(&dir).len(), 6);
        let mut before = Vec::new();
        for p in g.all() {
            let text = fs::read_to_string(p).unwrap();
            assert!(text.starts_with("-----BEGIN"), "{} is not PEM", p.display());
            before.push(text);
        }
        assert!(before[0].starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(before[1].starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(before[3], before[5], "edge and backend share a key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [&g.ca_key, &g.edge_key, &g.backend_key] {
                let mode = fs::metadata(p).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", p.display());
            }
        }

        let again = ensure(&dir).unwrap();
        assert_eq!(again, g);
        for (p, text) in again.all().into_iter().zip(&before) {
            assert_eq!(&fs::read_to_string(p).unwrap(), text, "ensure regenerated");
        }

        // A missing file makes `ensure` generate a fresh set.
        fs::remove_file(&g.backend_key).unwrap();
        ensure(&dir).unwrap();
        assert_eq!(existing(&dir).len(), 6);
        assert_ne!(fs::read_to_string(&g.ca_cert).unwrap(), before[0]);
    }

    #[test]
    fn ip_hosts_become_ip_sans() {
        let p = leaf_params("edge", &default_hosts()).unwrap();
        assert_eq!(
            p.subject_alt_names,
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::IpAddress("::1".parse().unwrap()),
            ]
        );
        assert!(p.not_before < p.not_after);
        assert_eq!(ca_params().unwrap().not_after, p.not_after);
    }
}
