//! Development certificates for roomcast: one CA, and leaf certificates for edges (presented to
//! clients) and backends (presented to edges), all generated with rcgen (ring backend).
//!
//! Clients and edges trust `ca.pem`. Private keys (`*.key`) are written with mode 0600 and are
//! git-ignored; never commit them. Production deployments bring their own PKI and pass the
//! files with `--cert`, `--key` and `--ca`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// Paths of the generated files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub edge_cert: PathBuf,
    pub edge_key: PathBuf,
    pub backend_cert: PathBuf,
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

    fn all(&self) -> [&PathBuf; 6] {
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

/// Names the leaf certificates are valid for by default: the loopback addresses.
pub fn default_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// Which of the files already exist in `dir`.
pub fn existing(dir: &Path) -> Vec<PathBuf> {
    Generated::in_dir(dir)
        .all()
        .into_iter()
        .filter(|p| p.exists())
        .cloned()
        .collect()
}

/// Returns the certificates in `dir`, generating them (for [`default_hosts`]) unless all exist.
pub fn ensure(dir: &Path) -> Result<Generated> {
    let g = Generated::in_dir(dir);
    if g.all().iter().all(|p| p.exists()) {
        return Ok(g);
    }
    generate(dir, &default_hosts())
}

/// Generates a new CA and edge/backend certificates valid for `hosts` (DNS names or IPs) into
/// `dir`, replacing any files there.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<Generated> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let g = Generated::in_dir(dir);
    let year = current_year();

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = name("roomcast development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = date_time_ymd(year - 1, 1, 1);
    ca.not_after = date_time_ymd(year + 5, 1, 1);
    let ca_cert = ca.self_signed(&ca_key)?;
    write(&g.ca_cert, &ca_cert.pem(), false)?;
    write(&g.ca_key, &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    for (role, cert_path, key_path) in [
        ("edge", &g.edge_cert, &g.edge_key),
        ("backend", &g.backend_cert, &g.backend_key),
    ] {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(hosts.to_vec())
            .with_context(|| format!("bad host name in {hosts:?}"))?;
        p.distinguished_name = name(&format!("roomcast {role}"));
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = date_time_ymd(year - 1, 1, 1);
        p.not_after = date_time_ymd(year + 2, 1, 1);
        let cert = p.signed_by(&key, &issuer)?;
        write(cert_path, &cert.pem(), false)?;
        write(key_path, &key.serialize_pem(), true)?;
    }
    Ok(g)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "roomcast development");
    dn
}

fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

/// Writes atomically (temp file + rename) so a concurrent reader never sees half a file;
/// private keys get mode 0600.
fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_parsable_files_and_ensure_keeps_them() {
        let dir = std::env::temp_dir().join(format!("roomcast-certs-test-{}", std::process::id()));
        let g = generate(&dir, &default_hosts()).unwrap();
        for p in g.all() {
            let text = fs::read_to_string(p).unwrap();
            assert!(text.starts_with("-----BEGIN"), "{} is not PEM", p.display());
        }
        let before = fs::read(&g.edge_cert).unwrap();
        let again = ensure(&dir).unwrap();
        assert_eq!(again, g);
        assert_eq!(
            fs::read(&g.edge_cert).unwrap(),
            before,
            "ensure regenerated"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&g.edge_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
