//! RPC between shoal nodes: QUIC (quinn) with mutual TLS.
//!
//! Every node serves and calls on one UDP socket. A call opens a
//! bidirectional stream on a cached connection to the peer, writes one
//! request frame, and reads one response frame:
//!
//! ```text
//! frame    = length (u32, big endian) | body
//! request  = postcard(Header { version, from, service }) | payload
//! response = status (u8: 0 ok, 1 error) | payload or error text
//! ```
//!
//! Frames are bounded ([`TransportConfig::max_message_bytes`]); a call that
//! does not finish within [`TransportConfig::request_timeout`] fails, which
//! the caller treats like no answer. Certificates come from a CA derived
//! from the cluster secret ([`tls`]): a peer of another cluster is refused.
//!
//! Only the agent links this crate: the simulator drives the pure state
//! machines with its own virtual network.

pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use tls::{ApiTls, NodeTls};

/// Version of the request header.
pub const PROTOCOL_VERSION: u8 = 1;

/// What a call is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Service {
    /// Desired-state replication (anti-entropy and pushes).
    State,
    /// Placement: bids, awards, leases.
    Placement,
    /// Task logs and status.
    Tasks,
    /// Packages of `dir:` repositories, from the node that holds them.
    Packages,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    version: u8,
    from: NodeId,
    service: Service,
}

/// A request frame as read off a stream: its header and the body the
/// service decodes.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The caller's protocol version.
    pub version: u8,
    /// The caller, as it says (the connection's certificate proves it is a
    /// member of the cluster).
    pub from: NodeId,
    /// What the call is for.
    pub service: Service,
    /// The service's message.
    pub body: &'a [u8],
}

/// Reads a request frame's header (pure: the fuzz target `rpc_frame`
/// drives it with arbitrary bytes).
pub fn decode_request(frame: &[u8]) -> Result<Request<'_>, String> {
    let (header, body) = postcard::take_from_bytes::<Header>(frame)
        .map_err(|e| format!("malformed request header: {e}"))?;
    Ok(Request {
        version: header.version,
        from: header.from,
        service: header.service,
        body,
    })
}

/// A failed call or set-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// TLS material could not be built (a bug, or a broken secret).
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// The socket could not be used.
    #[error("cannot use the RPC socket: {0}")]
    Io(String),
    /// No connection (unreachable, refused at the handshake, closed).
    #[error("cannot reach {addr}: {why}")]
    Connect {
        /// Peer address.
        addr: SocketAddr,
        /// Why.
        why: String,
    },
    /// The call did not finish in time.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// Peer address.
        addr: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// A message over the size limit.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The peer answered with an error.
    #[error("peer error: {0}")]
    Remote(String),
    /// Stream-level failure (reset, malformed frame).
    #[error("stream to {addr} failed: {why}")]
    Stream {
        /// Peer address.
        addr: SocketAddr,
        /// Why.
        why: String,
    },
    /// Cut by fault injection (tests).
    #[error("{0} is cut off by fault injection")]
    Blocked(NodeId),
}

/// Tuning.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// A call that takes longer fails. Default 5 s.
    pub request_timeout: Duration,
    /// Largest request or response. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Connections kept open. Default 32.
    pub max_connections: usize,
    /// A connection idle this long is closed. Default 20 s: calls come in
    /// bursts (an anti-entropy round, a placement exchange), and an open
    /// QUIC connection costs keep-alives and memory between them.
    pub idle_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            request_timeout: Duration::from_secs(5),
            max_message_bytes: 16 << 20,
            max_connections: 32,
            idle_timeout: Duration::from_secs(20),
        }
    }
}

/// Counters.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Calls made.
    pub requests_out: AtomicU64,
    /// Calls that failed.
    pub requests_failed: AtomicU64,
    /// Calls served.
    pub requests_in: AtomicU64,
    /// Payload bytes sent (requests and responses).
    pub bytes_out: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// Connections established by this node.
    pub connects: AtomicU64,
    /// Incoming connections refused (TLS handshake failed: another cluster,
    /// or not TLS at all).
    pub handshakes_refused: AtomicU64,
}

/// Serves calls.
pub trait Handler: Send + Sync + 'static {
    /// Answers a call from `from`; an `Err` is sent back as the peer's error.
    fn handle(
        &self,
        from: NodeId,
        service: Service,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;
}

struct Inner {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    local: NodeId,
    config: TransportConfig,
    conns: Mutex<BTreeMap<SocketAddr, (quinn::Connection, u64)>>,
    tick: AtomicU64,
    blocked: Mutex<BTreeSet<NodeId>>,
    /// Forgotten nodes (`shoal node forget`): a connection that presents
    /// one's certificate is closed, and none is called.
    refused: Mutex<BTreeSet<NodeId>>,
    stats: TransportStats,
}

/// A node's RPC endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

async fn write_frame(send: &mut quinn::SendStream, body: &[u8]) -> Result<(), String> {
    let len = u32::try_from(body.len()).map_err(|_| "frame too large".to_owned())?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.write_all(body).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())
}

async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(format!("frame of {len} bytes exceeds the limit of {max}"));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

impl Transport {
    /// A transport on `socket` for `local`, with the cluster's TLS.
    pub fn bind(
        socket: std::net::UdpSocket,
        tls: &NodeTls,
        local: NodeId,
        config: TransportConfig,
    ) -> Result<Transport, TransportError> {
        let server_crypto = QuicServerConfig::try_from(tls.server_config()?)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(config.idle_timeout)
                .map_err(|e| TransportError::Io(e.to_string()))?,
        ));
        transport.max_concurrent_bidi_streams(256u32.into());
        let transport = Arc::new(transport);
        server.transport_config(transport.clone());
        let client_crypto = QuicClientConfig::try_from(tls.client_config()?)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        socket
            .set_nonblocking(true)
            .map_err(|e| TransportError::Io(e.to_string()))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| TransportError::Io(e.to_string()))?;
        Ok(Transport {
            inner: Arc::new(Inner {
                endpoint,
                client,
                local,
                config,
                conns: Mutex::new(BTreeMap::new()),
                tick: AtomicU64::new(0),
                blocked: Mutex::new(BTreeSet::new()),
                refused: Mutex::new(BTreeSet::new()),
                stats: TransportStats::default(),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner
            .endpoint
            .local_addr()
            .map_err(|e| TransportError::Io(e.to_string()))
    }

    /// Counters.
    pub fn stats(&self) -> &TransportStats {
        &self.inner.stats
    }

    /// This node.
    pub fn local(&self) -> NodeId {
        self.inner.local
    }

    /// Cuts this node off from `peers` (calls to them fail, calls from them
    /// are refused), replacing any previous cut. For partition tests.
    pub fn set_blocked(&self, peers: BTreeSet<NodeId>) {
        *self.inner.blocked.lock().expect("lock") = peers;
    }

    fn is_blocked(&self, peer: NodeId) -> bool {
        self.inner.blocked.lock().expect("lock").contains(&peer)
            || self.inner.refused.lock().expect("lock").contains(&peer)
    }

    /// Stops trusting the certificates of `peers` (nodes forgotten for
    /// good): a connection presenting one is closed after the handshake,
    /// and no call goes to them.
    pub fn set_refused(&self, peers: BTreeSet<NodeId>) {
        *self.inner.refused.lock().expect("lock") = peers;
    }

    /// Whether `conn`'s peer presents the certificate of a refused node
    /// (one valid for its name `<id>.node.shoal`).
    fn presents_refused(&self, conn: &quinn::Connection) -> bool {
        let refused = self.inner.refused.lock().expect("lock").clone();
        if refused.is_empty() {
            return false;
        }
        let Some(certs) = conn.peer_identity().and_then(|i| {
            i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        }) else {
            return false;
        };
        let Some(leaf) = certs.first() else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
            return true;
        };
        refused.iter().any(|id| {
            rustls::pki_types::ServerName::try_from(tls::server_name(*id))
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }

    async fn connection(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        service: Service,
    ) -> Result<quinn::Connection, TransportError> {
        let tick = self.inner.tick.fetch_add(1, Ordering::Relaxed);
        if let Some((conn, used)) = self.inner.conns.lock().expect("lock").get_mut(&addr)
            && conn.close_reason().is_none()
        {
            *used = tick;
            return Ok(conn.clone());
        }
        let connecting = self
            .inner
            .endpoint
            .connect_with(self.inner.client.clone(), addr, &tls::server_name(peer))
            .map_err(|e| TransportError::Connect {
                addr,
                why: e.to_string(),
            })?;
        let conn = connecting.await.map_err(|e| TransportError::Connect {
            addr,
            why: e.to_string(),
        })?;
        self.inner.stats.connects.fetch_add(1, Ordering::Relaxed);
        debug!(%peer, %addr, ?service, "RPC connection opened");
        let mut conns = self.inner.conns.lock().expect("lock");
        if conns.len() >= self.inner.config.max_connections
            && let Some(oldest) = conns
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(a, _)| *a)
            && let Some((old, _)) = conns.remove(&oldest)
        {
            old.close(0u32.into(), b"evicted");
        }
        conns.insert(addr, (conn.clone(), tick));
        Ok(conn)
    }

    fn forget(&self, addr: SocketAddr) {
        self.inner.conns.lock().expect("lock").remove(&addr);
    }

    /// Drops the cached connection to `addr` (the peer restarted: its old
    /// connection is dead).
    pub fn disconnect(&self, addr: SocketAddr) {
        if let Some((conn, _)) = self.inner.conns.lock().expect("lock").remove(&addr) {
            conn.close(0u32.into(), b"peer restarted");
        }
    }

    /// Calls `service` on `peer` at `addr`.
    pub async fn request(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        service: Service,
        body: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        if self.is_blocked(peer) {
            return Err(TransportError::Blocked(peer));
        }
        self.inner
            .stats
            .requests_out
            .fetch_add(1, Ordering::Relaxed);
        let timeout = self.inner.config.request_timeout;
        let result = tokio::time::timeout(timeout, self.call(peer, addr, service, body))
            .await
            .unwrap_or(Err(TransportError::Timeout { addr, timeout }));
        if result.is_err() {
            self.inner
                .stats
                .requests_failed
                .fetch_add(1, Ordering::Relaxed);
            self.forget(addr);
        }
        result
    }

    async fn call(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        service: Service,
        body: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        let max = self.inner.config.max_message_bytes;
        let header = postcard::to_allocvec(&Header {
            version: PROTOCOL_VERSION,
            from: self.inner.local,
            service,
        })
        .expect("header encodes");
        let mut frame = header;
        frame.extend_from_slice(body);
        if frame.len() > max {
            return Err(TransportError::TooLarge {
                size: frame.len(),
                max,
            });
        }
        let conn = self.connection(peer, addr, service).await?;
        let stream_err = |why: String| TransportError::Stream { addr, why };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        write_frame(&mut send, &frame).await.map_err(stream_err)?;
        self.inner
            .stats
            .bytes_out
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        let response = read_frame(&mut recv, max).await.map_err(stream_err)?;
        self.inner
            .stats
            .bytes_in
            .fetch_add(response.len() as u64, Ordering::Relaxed);
        match response.split_first() {
            Some((0, payload)) => Ok(payload.to_vec()),
            Some((_, text)) => Err(TransportError::Remote(
                String::from_utf8_lossy(text).into_owned(),
            )),
            None => Err(stream_err("empty response".into())),
        }
    }

    /// Accepts connections and serves calls with `handler` until
    /// `shutdown`.
    pub async fn serve(self, handler: Arc<dyn Handler>, shutdown: CancellationToken) {
        loop {
            let incoming = tokio::select! {
                () = shutdown.cancelled() => break,
                i = self.inner.endpoint.accept() => i,
            };
            let Some(incoming) = incoming else { break };
            let this = self.clone();
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        this.inner
                            .stats
                            .handshakes_refused
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(error = %e, "incoming RPC connection refused");
                        return;
                    }
                };
                if this.presents_refused(&conn) {
                    this.inner
                        .stats
                        .handshakes_refused
                        .fetch_add(1, Ordering::Relaxed);
                    debug!("RPC connection from a forgotten node closed");
                    conn.close(2u32.into(), b"forgotten");
                    return;
                }
                this.serve_connection(conn, handler, shutdown).await;
            });
        }
        self.inner.endpoint.close(0u32.into(), b"shutting down");
    }

    async fn serve_connection(
        &self,
        conn: quinn::Connection,
        handler: Arc<dyn Handler>,
        shutdown: CancellationToken,
    ) {
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                s = conn.accept_bi() => s,
            };
            let Ok((mut send, mut recv)) = stream else {
                return;
            };
            let this = self.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let max = this.inner.config.max_message_bytes;
                let Ok(frame) = read_frame(&mut recv, max).await else {
                    return;
                };
                this.inner
                    .stats
                    .bytes_in
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                let reply = match decode_request(&frame) {
                    Ok(r) if r.version != PROTOCOL_VERSION => {
                        Err(format!("unsupported protocol version {}", r.version))
                    }
                    Ok(r) if this.is_blocked(r.from) => {
                        Err(format!("{} is cut off by fault injection", r.from))
                    }
                    Ok(r) => {
                        this.inner.stats.requests_in.fetch_add(1, Ordering::Relaxed);
                        handler.handle(r.from, r.service, r.body.to_vec()).await
                    }
                    Err(e) => Err(e),
                };
                let mut out = Vec::new();
                match reply {
                    Ok(payload) => {
                        out.push(0);
                        out.extend_from_slice(&payload);
                    }
                    Err(text) => {
                        out.push(1);
                        out.extend_from_slice(text.as_bytes());
                    }
                }
                if out.len() > max {
                    out = vec![1];
                    out.extend_from_slice(b"response exceeds the message limit");
                }
                this.inner
                    .stats
                    .bytes_out
                    .fetch_add(out.len() as u64, Ordering::Relaxed);
                let _ = write_frame(&mut send, &out).await;
            });
        }
    }
}
