//! Start-up phase: the gossip (UDP), RPC (UDP, for QUIC) and API (TCP)
//! sockets, and the addresses other machines reach them at.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, UdpSocket};

use super::{AgentError, AgentOptions, DEFAULT_API_PORT, DEFAULT_GOSSIP_PORT};
use crate::datadir::{DataDir, StoredSettings};

/// The bound sockets and the addresses to advertise.
pub(super) struct Sockets {
    pub gossip: UdpSocket,
    /// Reserved for the QUIC endpoint, which takes it over.
    pub rpc: std::net::UdpSocket,
    pub api: TcpListener,
    /// Advertised gossip address.
    pub gossip_addr: SocketAddr,
    /// Advertised RPC address.
    pub rpc_addr: SocketAddr,
    /// Bound API address.
    pub api_bound: SocketAddr,
    /// Advertised API address.
    pub api_addr: SocketAddr,
    /// The DNS server's UDP and TCP sockets (none with `--dns off`).
    pub dns: Option<(UdpSocket, TcpListener)>,
    /// Bound DNS address.
    pub dns_bound: Option<SocketAddr>,
}

/// The address other machines reach this one at, when bound to 0.0.0.0:
/// the source address of the default route (no packet is sent).
fn outbound_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn advertised(bound: SocketAddr, advertise: IpAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::new(advertise, bound.port())
    } else {
        bound
    }
}

/// Where to try binding: with port 0 configured, first the port of the
/// previous start (so that members that knew this node find it again after
/// a restart), then any free port.
fn bind_candidates(configured: SocketAddr, previous: Option<SocketAddr>) -> Vec<SocketAddr> {
    match previous {
        Some(p) if configured.port() == 0 && p.port() != 0 => {
            vec![SocketAddr::new(configured.ip(), p.port()), configured]
        }
        _ => vec![configured],
    }
}

async fn bind_udp(
    what: &'static str,
    configured: SocketAddr,
    previous: Option<SocketAddr>,
) -> Result<UdpSocket, AgentError> {
    let mut last = None;
    for addr in bind_candidates(configured, previous) {
        match UdpSocket::bind(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(AgentError::Bind {
        what,
        addr: configured,
        source: last.unwrap_or_else(|| std::io::Error::other("no address to bind")),
        hint: "; pass another HOST:PORT (port 0 picks a free one)",
    })
}

async fn bind_tcp(
    configured: SocketAddr,
    previous: Option<SocketAddr>,
) -> Result<TcpListener, AgentError> {
    let mut last = None;
    for addr in bind_candidates(configured, previous) {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(AgentError::Bind {
        what: "API",
        addr: configured,
        source: last.unwrap_or_else(|| std::io::Error::other("no address to bind")),
        hint: "; pass --api HOST:PORT (port 0 picks a free one)",
    })
}

fn local_addr(
    what: &'static str,
    addr: SocketAddr,
    got: std::io::Result<SocketAddr>,
) -> Result<SocketAddr, AgentError> {
    got.map_err(|source| AgentError::Bind {
        what,
        addr,
        source,
        hint: "",
    })
}

/// Binds the three sockets: the configured addresses (port 0 allowed),
/// preferring the ports of the previous start.
pub(super) async fn bind(
    opts: &AgentOptions,
    settings: &StoredSettings,
    data_dir: &DataDir,
) -> Result<Sockets, AgentError> {
    let bind = settings.bind.unwrap_or(if opts.dev {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_GOSSIP_PORT))
    });
    let previous = data_dir.previous_agent_file();
    let gossip = bind_udp("gossip", bind, previous.as_ref().map(|p| p.gossip)).await?;
    let gossip_bound = local_addr("gossip", bind, gossip.local_addr())?;
    let rpc_configured = settings.rpc.unwrap_or_else(|| {
        let port = if bind.port() == 0 {
            0
        } else {
            bind.port().wrapping_add(1)
        };
        SocketAddr::new(bind.ip(), port)
    });
    let rpc = bind_udp("rpc", rpc_configured, previous.as_ref().map(|p| p.rpc))
        .await?
        .into_std()
        .map_err(|source| AgentError::Bind {
            what: "rpc",
            addr: rpc_configured,
            source,
            hint: "",
        })?;
    let rpc_bound = local_addr("rpc", rpc_configured, rpc.local_addr())?;
    let api_configured = settings.api.unwrap_or(if opts.dev {
        SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_API_PORT))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_API_PORT))
    });
    let api = bind_tcp(api_configured, previous.as_ref().map(|p| p.api)).await?;
    let api_bound = local_addr("API", api_configured, api.local_addr())?;
    let (dns, dns_bound) = match dns_address(opts, settings, bind) {
        None => (None, None),
        Some(configured) => {
            let previous = previous.as_ref().and_then(|p| p.dns);
            let mut last = None;
            let mut bound = None;
            for addr in bind_candidates(configured, previous) {
                match crate::dns::bind(addr).await {
                    Ok(s) => {
                        bound = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let (udp, tcp) = bound.ok_or_else(|| AgentError::Bind {
                what: "DNS",
                addr: configured,
                source: last.unwrap_or_else(|| std::io::Error::other("no address to bind")),
                hint: "; pass --dns HOST:PORT (port 0 picks a free one), or --dns off",
            })?;
            let at = local_addr("DNS", configured, udp.local_addr())?;
            (Some((udp, tcp)), Some(at))
        }
    };
    let advertise_ip = settings.advertise.unwrap_or_else(outbound_ip);
    Ok(Sockets {
        gossip,
        rpc,
        api,
        gossip_addr: advertised(gossip_bound, advertise_ip),
        rpc_addr: advertised(rpc_bound, advertise_ip),
        api_bound,
        api_addr: advertised(api_bound, advertise_ip),
        dns,
        dns_bound,
    })
}

/// Where the DNS server listens: `--dns` (`off`: nowhere); by default on
/// 127.0.0.1, next to the other ports (gossip port + 2, so 5483; port 0
/// when gossip took port 0), and on 127.0.0.1:5483 with `--dev`.
fn dns_address(
    opts: &AgentOptions,
    settings: &StoredSettings,
    bind: SocketAddr,
) -> Option<SocketAddr> {
    match settings.dns.as_deref() {
        Some("off") => None,
        // Checked when the settings were resolved.
        Some(addr) => addr.parse().ok(),
        None if opts.dev => Some(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            crate::dns::DEFAULT_DNS_PORT,
        ))),
        None => {
            let port = if bind.port() == 0 {
                0
            } else {
                bind.port().wrapping_add(2)
            };
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        }
    }
}
