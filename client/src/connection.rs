//! One QUIC connection to one edge (see PROTOCOL.md): the handshake on the control stream, one
//! bidirectional stream per request, and the push streams ([`PushStreams`]), read by whoever
//! takes them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{Endpoint, RecvStream, SendStream, VarInt};
use roomcast_net::net;
use roomcast_net::stream::{read_frame, write_frame};
use roomcast_net::tls::{self, TransportLimits};
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{
    code, CLIENT_ALPN, DEFAULT_MAX_FRAME, HARD_MAX_FRAME, PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::client::ClientOptions;
use crate::error::ClientError;
use crate::push_streams::PushStreams;

/// A server push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub route: String,
    /// The room, or empty for pushes that are not room messages.
    pub rid: String,
    /// The room's sequence number, or 0 for pushes that are not room messages.
    pub seq: u64,
    pub body: Bytes,
}

impl Push {
    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// What the edge said in `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The edge's node id (what the gate's `EntryAnswer.edge` names).
    pub edge: String,
    /// This connection's globally unique session name; a reconnect presents it to resume.
    pub session: String,
    /// Largest frame either side may send, as announced, capped at the protocol's hard maximum.
    pub max_frame: usize,
}

/// One QUIC connection to one edge, after a successful `Hello`/`Welcome`.
///
/// Requests may run concurrently from several tasks (`&self`): each has its own stream, so a
/// slow answer never delays another. One background task lives as long as the connection: the
/// control-stream reader (which records an `Error` frame as the close reason). The push
/// streams are read by whoever takes them ([`Connection::push_streams`], or
/// [`Connection::pushes`] for a channel); until then, QUIC flow control holds their data back.
pub struct Connection {
    conn: quinn::Connection,
    endpoint: Endpoint,
    /// False when the endpoint is shared with other connections (`ClientOptions::endpoint`):
    /// closing this connection then must not wait for the others to go idle.
    owns_endpoint: bool,
    welcome: Welcome,
    next_id: AtomicU32,
    request_timeout: Duration,
    /// The push streams, taken once (directly or behind a channel).
    pushes: Mutex<Option<PushStreams>>,
    /// Capacity of the channel [`Connection::pushes`] makes.
    push_capacity: usize,
    /// The reason the edge gave on the control stream before closing, if any.
    error: Arc<Mutex<Option<String>>>,
    /// Resolves when the handshake of a 0-RTT connection completes (true: early data accepted).
    zero_rtt: Mutex<Option<quinn::ZeroRttAccepted>>,
}

impl Connection {
    /// Connects to the edge at `addr` and completes the handshake.
    pub async fn connect(
        opts: &ClientOptions,
        addr: SocketAddr,
    ) -> Result<Connection, ClientError> {
        Connection::open(opts, addr, false).await
    }

    /// Like [`Connection::connect`], but when a TLS session with this edge can be resumed, sends
    /// `Hello` — and lets the caller send idempotent requests such as `gate.queryEntry` — as
    /// 0-RTT data, before the handshake completes. Never send a state-changing request on such
    /// a connection before [`Connection::handshake_done`]: the edge refuses them (425) because
    /// early data can be replayed. If the edge rejects the early data, requests fail; retry them
    /// on a normal connection.
    pub async fn connect_early(
        opts: &ClientOptions,
        addr: SocketAddr,
    ) -> Result<Connection, ClientError> {
        Connection::open(opts, addr, true).await
    }

    /// Whether this connection sent 0-RTT data that the edge accepted; waits for the end of the
    /// handshake.
    pub async fn handshake_done(&self) -> bool {
        let accepted = self.zero_rtt.lock().expect("0rtt lock").take();
        match accepted {
            Some(a) => a.await,
            None => false,
        }
    }

    async fn open(
        opts: &ClientOptions,
        addr: SocketAddr,
        early: bool,
    ) -> Result<Connection, ClientError> {
        tls::install_crypto_provider();
        let fail = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let limits = TransportLimits {
            max_bidi_streams: 0,
            // One stream per room plus the session stream.
            max_uni_streams: 1024,
            idle_timeout: opts.idle_timeout,
            keep_alive: opts.keep_alive,
            early_data: true,
            mtu_discovery: true,
        };
        let config = client_config(&opts.ca, &limits)?;
        let (endpoint, owns_endpoint) = match &opts.endpoint {
            Some(shared) => (shared.clone(), false),
            None => (
                net::endpoint(net::any_addr_for(&addr), None)
                    .map_err(|e| fail(format!("{e:#}")))?,
                true,
            ),
        };
        let connecting = endpoint
            .connect_with(config, addr, &opts.server_name)
            .map_err(|e| fail(e.to_string()))?;
        let wait = |connecting: quinn::Connecting| async move {
            tokio::time::timeout(opts.connect_timeout, connecting)
                .await
                // Nothing answering at all is a failure to connect, with the address in it.
                .map_err(|_| {
                    fail(format!(
                        "no answer within {:?} (is an edge listening there?)",
                        opts.connect_timeout
                    ))
                })?
                .map_err(|e| fail(e.to_string()))
        };
        let (conn, zero_rtt) = if early {
            match connecting.into_0rtt() {
                Ok((conn, accepted)) => (conn, Some(accepted)),
                Err(connecting) => (wait(connecting).await?, None),
            }
        } else {
            (wait(connecting).await?, None)
        };

        // One bound for the whole exchange: opening the stream can wait for stream credit and
        // the write for flow control, not only the read of the answer. With 0-RTT the
        // connection "opens" at once, whoever is at `addr` (session tickets are per server
        // name, not per address): then the first answer is also the proof that an edge is
        // there, and nothing within `connect_timeout` is a failure to connect, as without 0-RTT.
        let bound = if zero_rtt.is_some() {
            opts.connect_timeout.min(opts.request_timeout)
        } else {
            opts.request_timeout
        };
        let (send, recv, buf, welcome) = match tokio::time::timeout(bound, handshake(&conn)).await {
            Ok(Ok(done)) => done,
            Ok(Err(e @ ClientError::Handshake { .. })) => return Err(e),
            Ok(Err(e)) => return Err(close_reason(&conn).unwrap_or(e)),
            Err(_) if zero_rtt.is_some() => {
                return Err(fail(format!(
                    "no answer within {:?} (is an edge listening there?)",
                    opts.connect_timeout
                )))
            }
            Err(_) => return Err(ClientError::Timeout(opts.request_timeout)),
        };

        let error = Arc::new(Mutex::new(None));
        tokio::spawn(control_reader(
            send,
            recv,
            buf,
            welcome.max_frame,
            error.clone(),
        ));
        let pushes = PushStreams::new(conn.clone(), welcome.max_frame);
        Ok(Connection {
            conn,
            endpoint,
            owns_endpoint,
            welcome,
            next_id: AtomicU32::new(1),
            request_timeout: opts.request_timeout,
            pushes: Mutex::new(Some(pushes)),
            push_capacity: opts.push_capacity.max(1),
            error,
            zero_rtt: Mutex::new(zero_rtt),
        })
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The underlying quinn connection.
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }

    /// The pushes of this connection, in a bounded channel (`ClientOptions::push_capacity`)
    /// filled by a task reading the push streams; `None` once they were taken (by this or by
    /// [`Connection::push_streams`]). When the channel is full the task waits, so QUIC flow
    /// control slows the edge down (and an edge whose queues overflow closes the connection as
    /// a slow consumer): keep reading.
    pub fn pushes(&self) -> Option<mpsc::Receiver<Push>> {
        let mut streams = self.push_streams()?;
        let (tx, rx) = mpsc::channel(self.push_capacity);
        // Ends with the connection, or as soon as the receiver is dropped (not at the next push).
        tokio::spawn(async move {
            loop {
                let p = tokio::select! {
                    biased;
                    p = streams.recv() => p,
                    _ = tx.closed() => return,
                };
                let Some(p) = p else { return };
                if tx.send(p).await.is_err() {
                    return;
                }
            }
        });
        Some(rx)
    }

    /// The push streams themselves, read in the caller's task: cheaper than
    /// [`Connection::pushes`] by a task wake-up and a channel hop per push. `None` once taken.
    pub fn push_streams(&self) -> Option<PushStreams> {
        self.pushes.lock().expect("pushes lock").take()
    }

    /// Sends a request and waits for its response body (status 200) or error.
    pub async fn request(&self, route: &str, body: Bytes) -> Result<Bytes, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::Request {
            id,
            route: route.to_string(),
            body,
        };
        let answer = tokio::time::timeout(self.request_timeout, self.round_trip(&frame))
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))??;
        match answer {
            // Id 0 is how an edge answers a frame it could not decode (it never learnt the id).
            Frame::Response { id: got, .. } if got != id && got != 0 => Err(ClientError::Protocol(
                format!("the answer on the stream of request {id} is for request {got}"),
            )),
            Frame::Response {
                code: code::OK,
                body,
                ..
            } => Ok(body),
            Frame::Response { code, message, .. } => Err(ClientError::Request { code, message }),
            other => Err(ClientError::Protocol(format!(
                "expected Response, got {}",
                other.name()
            ))),
        }
    }

    /// A request with JSON bodies both ways.
    pub async fn request_json<T: Serialize, R: DeserializeOwned>(
        &self,
        route: &str,
        body: &T,
    ) -> Result<R, ClientError> {
        let bytes = self
            .request(route, Bytes::from(serde_json::to_vec(body)?))
            .await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Sends a notify: one `Notify` frame on a fresh stream, no answer. Bounded by the request
    /// timeout too, because opening a stream waits while the edge's stream limit is reached.
    pub async fn notify(&self, route: &str, body: Bytes) -> Result<(), ClientError> {
        let frame = Frame::Notify {
            route: route.to_string(),
            body,
        };
        let send = async {
            let (mut send, _recv) = self.conn.open_bi().await.map_err(ClientError::from)?;
            write_frame(&mut send, &frame).await?;
            let _ = send.finish();
            Ok::<_, ClientError>(())
        };
        tokio::time::timeout(self.request_timeout, send)
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))?
            .map_err(|e| self.or_closed(e))
    }

    /// A fresh request stream to write arbitrary bytes on (tests of bad input).
    pub async fn open_raw_stream(&self) -> Result<(SendStream, RecvStream), ClientError> {
        self.conn
            .open_bi()
            .await
            .map_err(|e| self.or_closed(e.into()))
    }

    /// Moves the connection to a new local UDP socket (a new port), as a network change would.
    /// QUIC connection migration keeps the session: no reconnect, no resume.
    pub fn rebind(&self) -> Result<SocketAddr, ClientError> {
        let old = self
            .endpoint
            .local_addr()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let socket = net::udp_socket(net::any_addr_for(&old))
            .map_err(|e| ClientError::Config(format!("{e:#}")))?;
        self.endpoint
            .rebind(socket)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        self.endpoint
            .local_addr()
            .map_err(|e| ClientError::Config(e.to_string()))
    }

    /// The QUIC close code, if the connection was closed by the edge with one.
    pub fn close_code(&self) -> Option<u32> {
        match self.conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(c)) => {
                u32::try_from(c.error_code.into_inner()).ok()
            }
            _ => None,
        }
    }

    /// Closes the connection and waits briefly for the close to reach the edge.
    pub async fn close(&self) {
        self.conn.close(VarInt::from_u32(0), b"client closed");
        if self.owns_endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        }
    }

    /// Why the connection closed, if it did.
    pub fn close_reason(&self) -> Option<String> {
        if let Some(e) = self.error.lock().expect("error lock").clone() {
            return Some(e);
        }
        self.conn.close_reason().map(|r| r.to_string())
    }

    async fn round_trip(&self, frame: &Frame) -> Result<Frame, ClientError> {
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| self.or_closed(e.into()))?;
        write_frame(&mut send, frame)
            .await
            .map_err(|e| self.or_closed(e.into()))?;
        let _ = send.finish();
        let mut buf = BytesMut::new();
        // `max_frame` bounds what the edge accepts; answers from the edge (a large room's member
        // list, say) may be bigger, up to the protocol's hard cap.
        match read_frame(
            &mut recv,
            &mut buf,
            roomcast_protocol::protocol::HARD_MAX_FRAME,
        )
        .await
        {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(ClientError::Closed(
                "edge finished the request stream without answering".into(),
            )),
            Err(e) => Err(self.or_closed(e.into())),
        }
    }

    /// `e`, unless the connection is gone: then `Closed` with why it went (the edge's own words
    /// when it sent an `Error` frame), so that a caller can tell a dead connection (reconnect)
    /// from a failed request on a live one.
    fn or_closed(&self, e: ClientError) -> ClientError {
        match self.close_reason() {
            Some(reason) => ClientError::Closed(reason),
            None => e,
        }
    }
}

/// Largest `Welcome` the client reads: two strings of at most 65535 bytes plus the fixed fields.
/// The real limit is not known before the edge has announced it, so this one is tight.
const WELCOME_MAX: usize = 1 + 2 + 2 * (2 + u16::MAX as usize) + 4;

/// Sends `Hello` on the connection's first bidirectional stream (the control stream) and reads
/// the edge's answer. Returns the open control stream, any bytes read past the `Welcome`, and
/// what the edge announced.
async fn handshake(
    conn: &quinn::Connection,
) -> Result<(SendStream, RecvStream, BytesMut, Welcome), ClientError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        client: format!("roomcast-sdk/{}", env!("CARGO_PKG_VERSION")),
    };
    write_frame(&mut send, &hello).await?;
    let mut buf = BytesMut::new();
    let welcome = match read_frame(&mut recv, &mut buf, WELCOME_MAX).await? {
        Some(Frame::Welcome {
            version,
            edge,
            session,
            max_frame,
        }) => {
            if version != PROTOCOL_VERSION {
                return Err(ClientError::Protocol(format!(
                    "the edge answered with protocol version {version}; this SDK speaks \
                     version {PROTOCOL_VERSION}"
                )));
            }
            Welcome {
                edge,
                session,
                max_frame: usable_max_frame(max_frame),
            }
        }
        Some(Frame::Error { code, message }) => {
            return Err(ClientError::Handshake { code, message })
        }
        Some(other) => {
            return Err(ClientError::Protocol(format!(
                "expected Welcome, got {}",
                other.name()
            )))
        }
        None => {
            return Err(ClientError::Closed(
                "edge finished the control stream without answering Hello".into(),
            ))
        }
    };
    Ok((send, recv, buf, welcome))
}

/// The frame limit the client applies to everything the edge sends after `Welcome`: what the
/// edge announced, but never above the protocol's hard maximum (an edge announcing 4 GiB must
/// not make us buffer 4 GiB per stream), and the default when it announced nonsense (0).
fn usable_max_frame(announced: u32) -> usize {
    match usize::try_from(announced) {
        Ok(0) => DEFAULT_MAX_FRAME,
        Ok(n) => n.min(HARD_MAX_FRAME),
        Err(_) => HARD_MAX_FRAME,
    }
}

/// Key of the configuration cache: CA file, idle timeout, keep-alive interval.
type ConfigKey = (std::path::PathBuf, Duration, Duration);

/// One TLS configuration per CA file (and transport timing) for the whole process, so
/// reconnects share its session cache and resume TLS sessions with edges they have spoken to
/// (cheaper handshakes).
fn client_config(
    ca: &std::path::Path,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, ClientError> {
    static CONFIGS: std::sync::OnceLock<
        Mutex<std::collections::HashMap<ConfigKey, quinn::ClientConfig>>,
    > = std::sync::OnceLock::new();
    let configs = CONFIGS.get_or_init(Default::default);
    let key = (ca.to_path_buf(), limits.idle_timeout, limits.keep_alive);
    if let Some(c) = configs.lock().expect("configs lock").get(&key) {
        return Ok(c.clone());
    }
    if limits.keep_alive.is_zero() || limits.keep_alive >= limits.idle_timeout {
        return Err(ClientError::Config(format!(
            "keep_alive ({:?}) must be above zero and below idle_timeout ({:?}), or a healthy \
             but quiet connection would time out",
            limits.keep_alive, limits.idle_timeout
        )));
    }
    let config = tls::client_config(ca, CLIENT_ALPN, limits, None)
        .map_err(|e| ClientError::Config(format!("{e:#}")))?;
    configs
        .lock()
        .expect("configs lock")
        .insert(key, config.clone());
    Ok(config)
}

fn close_reason(conn: &quinn::Connection) -> Option<ClientError> {
    conn.close_reason()
        .map(|r| ClientError::Closed(r.to_string()))
}

/// Keeps the control stream open and records an `Error` frame from the edge.
async fn control_reader(
    send: SendStream,
    mut recv: RecvStream,
    mut buf: BytesMut,
    max: usize,
    error: Arc<Mutex<Option<String>>>,
) {
    while let Ok(Some(frame)) = read_frame(&mut recv, &mut buf, max).await {
        if let Frame::Error { code, message } = frame {
            *error.lock().expect("error lock") = Some(format!("{code}: {message}"));
        }
    }
    drop(send);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_frame_limit_is_capped() {
        assert_eq!(usable_max_frame(65536), 65536);
        assert_eq!(usable_max_frame(0), DEFAULT_MAX_FRAME);
        assert_eq!(usable_max_frame(u32::MAX), HARD_MAX_FRAME);
    }

    #[test]
    fn a_welcome_with_maximal_strings_fits_the_handshake_limit() {
        let welcome = Frame::Welcome {
            version: PROTOCOL_VERSION,
            edge: "e".repeat(u16::MAX as usize),
            session: "s".repeat(u16::MAX as usize),
            max_frame: u32::MAX,
        };
        let bytes = welcome.to_bytes().expect("encodes");
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(
            Frame::decode(&mut buf, WELCOME_MAX),
            Ok(Some(Frame::Welcome { .. }))
        ));
    }

    #[test]
    fn push_json_helper() {
        let p = Push {
            route: "onAdd".into(),
            rid: "lobby".into(),
            seq: 3,
            body: Bytes::from_static(br#"{"user":"bob"}"#),
        };
        let user: roomcast_protocol::protocol::OnUser = p.json().expect("valid body");
        assert_eq!(user.user, "bob");
        let bad = Push {
            body: Bytes::from_static(b"nope"),
            ..p
        };
        assert!(matches!(
            bad.json::<roomcast_protocol::protocol::OnUser>(),
            Err(ClientError::Json(_))
        ));
    }
}
