//! The chat page of the dev stack: a small static HTTP server on 127.0.0.1 for `web/`.
//!
//! Browsers need the page from `http://127.0.0.1` or `http://localhost` (a secure context, where
//! `WebTransport` exists). It serves `web/chat/` at `/`, the JavaScript client at `/client/`,
//! and `/config.json`: the edges' WebTransport URLs (every edge is a gate) and, in development,
//! the hash of their self-signed certificate (browsers' `serverCertificateHashes`).
//!
//! Only `GET` of a fixed set of files, read from disk on each request (edit and reload); nothing
//! outside `web/` is reachable. Requests are bounded (8 KiB of header, 10 s to send it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the page needs to connect.
#[derive(Debug, Clone, Serialize)]
pub struct PageConfig {
    /// WebTransport URLs of the gates, e.g. `https://127.0.0.1:7001/roomcast`.
    pub gates: Vec<String>,
    /// SHA-256 (hex) of the edges' WebTransport certificate (development).
    #[serde(rename = "certificateHashes")]
    pub certificate_hashes: Vec<String>,
}

impl PageConfig {
    /// The config for edges listening on `edges`, with the certificate in `cert` pinned.
    pub fn for_edges(edges: &[SocketAddr], cert: &Path) -> Result<PageConfig> {
        let der = roomcast_net::tls::load_certs(cert)?;
        Ok(PageConfig {
            gates: edges
                .iter()
                .map(|a| format!("https://{a}{}", roomcast_edge::webtransport::PATH))
                .collect(),
            certificate_hashes: vec![roomcast_edge::webtransport::sha256_hex(&der[0])],
        })
    }
}

/// The repository's `web/` folder.
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

/// A running page server; stops when dropped.
pub struct WebServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebServer {
    /// Serves `web/` on `listen` (must be in a tokio runtime).
    pub async fn start(listen: SocketAddr, config: PageConfig) -> Result<WebServer> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot bind the chat page on {listen}"))?;
        let addr = listener.local_addr()?;
        let config = Arc::new(serde_json::to_vec_pretty(&config)?);
        let root = web_dir();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (config, root) = (config.clone(), root.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        serve(stream, &root, &config),
                    )
                    .await;
                });
            }
        });
        Ok(WebServer { addr, task })
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// Which file a path names, and its content type. `None`: not served.
fn route(path: &str) -> Option<(PathBuf, &'static str)> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let rel = match path {
        "/" | "/index.html" => "chat/index.html".to_string(),
        p if p.starts_with("/client/") || p.starts_with("/chat/") => p[1..].to_string(),
        _ => return None,
    };
    // Plain file names only: no `..`, no hidden files, no sub-folders beyond the first.
    let name = rel.rsplit('/').next()?;
    if rel.matches('/').count() != 1 || name.starts_with('.') || rel.contains("..") {
        return None;
    }
    let kind = match name.rsplit('.').next()? {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "png" => "image/png",
        _ => return None,
    };
    Some((PathBuf::from(rel), kind))
}

async fn serve(mut stream: TcpStream, root: &Path, config: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n".to_vec(),
        )
    } else if path == "/config.json" {
        ("200 OK", "application/json", config.to_vec())
    } else {
        match route(path) {
            Some((rel, kind)) => match tokio::fs::read(root.join(rel)).await {
                Ok(b) => ("200 OK", kind, b),
                Err(_) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
            },
            None => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
        }
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn serves_only_files_of_web() {
        assert!(route("/").is_some());
        assert!(route("/client/roomcast.js").is_some());
        assert!(route("/chat/screenshot.png").is_some());
        assert!(route("/client/../../Cargo.toml").is_none());
        assert!(route("/client/x/y.js").is_none());
        assert!(route("/client/.hidden.js").is_none());
        assert!(route("/Cargo.toml").is_none());
        assert!(route("/client/package.json").is_none());
    }
}
