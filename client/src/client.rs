//! The high-level client: ask the gate which edge to use, connect there, enter rooms, send.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use roomcast_common::protocol::{
    route, ChatSend, Enter, Entered, EntryAnswer, Leave, QueryEntry, Sent,
};
use tokio::sync::mpsc;

use crate::connection::{Connection, Push};
use crate::error::ClientError;

/// How to reach and trust the system.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Any edge: it answers the gate query.
    pub gate: SocketAddr,
    /// CA certificate that signed the edges' certificates.
    pub ca: PathBuf,
    /// TLS name checked in edge certificates.
    pub server_name: String,
    /// Preferred region for the gate's choice (default: the gate edge's region).
    pub region: Option<String>,
    /// Bound of every request (and of connecting).
    pub request_timeout: Duration,
    /// Pushes buffered before the SDK stops reading (and flow control slows the edge).
    pub push_capacity: usize,
}

impl ClientOptions {
    pub fn new(gate: SocketAddr, ca: PathBuf) -> ClientOptions {
        ClientOptions {
            gate,
            ca,
            server_name: "localhost".into(),
            region: None,
            request_timeout: Duration::from_secs(10),
            push_capacity: 4096,
        }
    }
}

/// A logged-in-to-be user on one edge.
pub struct Client {
    uid: String,
    conn: Connection,
}

impl Client {
    /// Asks the gate which edge `uid` should use, then connects to that edge.
    pub async fn connect(opts: ClientOptions, uid: &str) -> Result<Client, ClientError> {
        let answer = query_entry(&opts, uid).await?;
        let addr = tokio::net::lookup_host((answer.host.as_str(), answer.port))
            .await
            .map_err(|e| ClientError::Connect {
                addr: format!("{}:{}", answer.host, answer.port),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| ClientError::Connect {
                addr: format!("{}:{}", answer.host, answer.port),
                reason: "no address".into(),
            })?;
        Client::connect_direct(opts, addr, uid).await
    }

    /// Connects to the edge at `addr` without asking the gate.
    pub async fn connect_direct(
        opts: ClientOptions,
        addr: SocketAddr,
        uid: &str,
    ) -> Result<Client, ClientError> {
        let conn = Connection::connect(&opts, addr).await?;
        Ok(Client {
            uid: uid.to_string(),
            conn,
        })
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Id of the edge this client is connected to.
    pub fn edge(&self) -> &str {
        &self.conn.welcome().edge
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The pushes (taken once).
    pub fn pushes(&self) -> Option<mpsc::Receiver<Push>> {
        self.conn.pushes()
    }

    /// Logs in as this client's uid (on first use) and joins `rid`.
    pub async fn enter(&self, rid: &str) -> Result<Entered, ClientError> {
        self.conn
            .request_json(
                route::ENTER,
                &Enter {
                    username: self.uid.clone(),
                    rid: rid.to_string(),
                },
            )
            .await
    }

    pub async fn leave(&self, rid: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .conn
            .request_json(
                route::LEAVE,
                &Leave {
                    rid: rid.to_string(),
                },
            )
            .await?;
        Ok(())
    }

    /// Sends `content` to the whole room.
    pub async fn send(&self, rid: &str, content: &str) -> Result<Sent, ClientError> {
        self.chat(rid, "*", content).await
    }

    /// Sends `content` to one member of the room.
    pub async fn send_to(
        &self,
        rid: &str,
        target: &str,
        content: &str,
    ) -> Result<Sent, ClientError> {
        self.chat(rid, target, content).await
    }

    async fn chat(&self, rid: &str, target: &str, content: &str) -> Result<Sent, ClientError> {
        self.conn
            .request_json(
                route::CHAT_SEND,
                &ChatSend {
                    rid: rid.to_string(),
                    content: content.to_string(),
                    from: None,
                    target: Some(target.to_string()),
                },
            )
            .await
    }

    /// Any request, raw body.
    pub async fn request(&self, route: &str, body: Bytes) -> Result<Bytes, ClientError> {
        self.conn.request(route, body).await
    }

    /// Closes the connection; the edge then makes the uid leave its rooms.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// Asks the gate at `opts.gate` which edge `uid` should use.
pub async fn query_entry(opts: &ClientOptions, uid: &str) -> Result<EntryAnswer, ClientError> {
    let gate = Connection::connect(opts, opts.gate).await?;
    let answer = gate
        .request_json(
            route::QUERY_ENTRY,
            &QueryEntry {
                uid: uid.to_string(),
                region: opts.region.clone(),
            },
        )
        .await;
    gate.close().await;
    answer
}
