//! Where the API accepts connections: HTTPS from anyone, plain HTTP only
//! from this machine.
//!
//! One port serves both. The first byte a client sends tells them apart
//! (a TLS handshake starts with `0x16`, an HTTP request with a method's
//! letter), so `http://127.0.0.1:5480` keeps working for the CLI and the
//! browser on the node itself, while a request in clear from another
//! machine — which would carry a token anyone on the path could read — is
//! answered `400` with what to do instead, and goes no further. With
//! `--api-insecure` the agent speaks plain HTTP to everyone and no TLS.
//!
//! Handshakes run in their own tasks (bounded by [`HANDSHAKE_TIMEOUT`]), so
//! a slow or silent client holds up nobody else.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a client has to send its first byte and finish a handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// A connection, in clear or over TLS.
pub type Conn = Either<TcpStream, TlsStream<TcpStream>>;

/// The API's listener, for `axum::serve`.
pub struct ApiListener {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

/// Starts accepting on `listener`: TLS with `tls` (and plain HTTP from
/// loopback clients only), or plain HTTP from everyone when `tls` is
/// `None` (`--api-insecure`). Stops at `shutdown`.
pub fn spawn(
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> io::Result<ApiListener> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: say so and
                    // let the moment pass rather than spin.
                    warn!(error = %e, "API: cannot accept a connection");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let tx = tx.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, open(stream, peer, acceptor)).await {
                    Ok(Some(conn)) => {
                        let _ = tx.send((conn, peer)).await;
                    }
                    Ok(None) => {}
                    Err(_) => debug!(%peer, "API: no handshake in time; closed"),
                }
            });
        }
    });
    Ok(ApiListener { rx, local })
}

/// The connection to serve, or `None` when it was refused or broke.
async fn open(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) -> Option<Conn> {
    let Some(acceptor) = tls else {
        return Some(Either::Left(stream));
    };
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return None,
    }
    if first[0] == TLS_HANDSHAKE {
        return match acceptor.accept(stream).await {
            Ok(s) => Some(Either::Right(s)),
            Err(e) => {
                debug!(%peer, error = %e, "API: TLS handshake failed");
                None
            }
        };
    }
    if peer.ip().to_canonical().is_loopback() {
        return Some(Either::Left(stream));
    }
    refuse_plain(stream, peer).await;
    None
}

/// What a client in clear from another machine is told.
pub fn https_required_message(local: SocketAddr) -> String {
    format!(
        "this shoal API speaks HTTPS to other machines: use https://HOST:{} and trust the cluster's API CA (the file api-ca.pem in any agent's data dir; SHOAL_CACERT=FILE for the CLI), or start the agent with --api-insecure on a trusted network",
        local.port()
    )
}

async fn refuse_plain(mut stream: TcpStream, peer: SocketAddr) {
    // Read the request's head first: closing with unread bytes would reset
    // the connection before the client reads the answer.
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
    let local = stream.local_addr().unwrap_or(peer);
    let body = serde_json::json!({"error": {
        "code": "https_required",
        "message": https_required_message(local),
    }})
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
    debug!(%peer, "API: plain HTTP from another machine refused");
}

impl axum::serve::Listener for ApiListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accepting task ended (shutdown): nothing more comes, and
            // axum's graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
