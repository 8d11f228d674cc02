//! The DNS server every agent runs (UDP and TCP, `--dns HOST:PORT`,
//! default `127.0.0.1:5483`), answering from [`crate::services`]:
//!
//! - `A`/`AAAA` for `<job>.service.shoal`: the addresses of the nodes that
//!   run a healthy task of the job;
//! - `SRV` for `_<port>._<tcp|udp>.<job>.service.shoal`: one record per
//!   healthy task, with its host port and the target
//!   `<node id>.node.shoal`, whose address comes in the additional section;
//! - `A`/`AAAA` for `<node id>.node.shoal`.
//!
//! `<job>` is the job name's `/`-separated words in reverse order,
//! dot-separated: `web/frontend` is `frontend.web.service.shoal`. Records
//! have a TTL of 0: answers follow health, and the agent's own cache is
//! what makes repeated lookups cheap. A name under `shoal.` that names
//! nothing is `NXDOMAIN`; a known job with no healthy task has no records
//! (`NOERROR`); any other name is `REFUSED`: the agent forwards nothing,
//! so it is never an open resolver; point the host's resolver at it for
//! `shoal.` only (see `docs/services.md`).
//!
//! The DNS messages are read and written by hickory (`hickory-server`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use shoal_model::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::placement::advertised_host;
use crate::services::{LookupError, Services};
use crate::state::Peer;

/// Default DNS port: next to the API (5480), gossip (5481) and RPC (5482).
pub const DEFAULT_DNS_PORT: u16 = 5483;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a name asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Question {
    /// `<job>.service.shoal`.
    Service {
        /// The job.
        job: String,
    },
    /// `_<port>._<proto>.<job>.service.shoal`.
    Port {
        /// The job.
        job: String,
        /// The port's name.
        port: String,
        /// Its protocol.
        protocol: Protocol,
    },
    /// `<node id>.node.shoal`.
    Node(String),
    /// Another name under `shoal.`: nothing there.
    Unknown,
    /// A name outside `shoal.`: not answered here.
    Foreign,
}

/// What `name` (any case, with or without the final dot) asks for.
pub fn parse_name(name: &str) -> Question {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let Some(inside) = lower
        .strip_suffix(".shoal")
        .or_else(|| (lower == "shoal").then_some(""))
    else {
        return Question::Foreign;
    };
    if let Some(id) = inside.strip_suffix(".node")
        && !id.is_empty()
        && !id.contains('.')
    {
        return Question::Node(id.to_owned());
    }
    let Some(rest) = inside.strip_suffix(".service") else {
        return Question::Unknown;
    };
    let mut labels: Vec<&str> = rest.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Question::Unknown;
    }
    let port = match labels.as_slice() {
        [p, proto, _, ..] if p.starts_with('_') && proto.starts_with('_') => {
            let protocol = match &proto[1..] {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return Question::Unknown,
            };
            let port = p[1..].to_owned();
            labels.drain(..2);
            Some((port, protocol))
        }
        _ => None,
    };
    if labels.iter().any(|l| l.starts_with('_')) {
        return Question::Unknown;
    }
    labels.reverse();
    let job = labels.join("/");
    match port {
        Some((port, protocol)) => Question::Port {
            job,
            port,
            protocol,
        },
        None => Question::Service { job },
    }
}

/// The DNS name of a job: `web/frontend` -> `frontend.web.service.shoal.`.
pub fn service_name(job: &str) -> String {
    let mut words: Vec<&str> = job.split('/').collect();
    words.reverse();
    format!("{}.service.shoal.", words.join("."))
}

/// Answers queries from the service lookups of this node.
pub struct DnsHandler {
    services: Services,
    live: watch::Receiver<Arc<Vec<Peer>>>,
}

/// The records of an answer.
#[derive(Default)]
struct Answer {
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode) -> Answer {
        Answer {
            code,
            ..Answer::default()
        }
    }
}

fn address_record(name: Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(name, 0, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name, 0, RData::AAAA(AAAA(v6))),
    }
}

fn wants_address(kind: RecordType, ip: IpAddr) -> bool {
    match kind {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

impl DnsHandler {
    /// A handler answering from `services`, with `live` members.
    pub fn new(services: Services, live: watch::Receiver<Arc<Vec<Peer>>>) -> DnsHandler {
        DnsHandler { services, live }
    }

    /// The answer to `name`, `kind`.
    async fn answer(&self, name: &Name, kind: RecordType) -> Answer {
        match parse_name(&name.to_ascii()) {
            Question::Foreign => Answer::code(ResponseCode::Refused),
            Question::Unknown => Answer::code(ResponseCode::NXDomain),
            Question::Node(id) => {
                let live = self.live.borrow().clone();
                let Some(peer) = live.iter().find(|p| p.id.to_string() == id) else {
                    return Answer::code(ResponseCode::NXDomain);
                };
                let mut a = Answer::default();
                if let Ok(ip) = IpAddr::from_str(&advertised_host(peer))
                    && wants_address(kind, ip)
                {
                    a.answers.push(address_record(name.clone(), ip));
                }
                a
            }
            Question::Service { job } => {
                let view = match self.services.endpoints(&job, None, false).await {
                    Ok(v) => v,
                    Err(e) => return failed(&e),
                };
                let mut a = Answer::default();
                let mut seen = Vec::new();
                for e in &view.endpoints {
                    if let Ok(ip) = IpAddr::from_str(&e.host)
                        && wants_address(kind, ip)
                        && !seen.contains(&ip)
                    {
                        seen.push(ip);
                        a.answers.push(address_record(name.clone(), ip));
                    }
                }
                a
            }
            Question::Port {
                job,
                port,
                protocol,
            } => {
                let view = match self.services.endpoints(&job, Some(&port), false).await {
                    Ok(v) => v,
                    Err(LookupError::NoPort { .. }) => return Answer::code(ResponseCode::NXDomain),
                    Err(e) => return failed(&e),
                };
                let entry = self.services.lookup(&job).await;
                let same_protocol = entry.ok().is_some_and(|e| {
                    e.ports().is_some_and(|ports| {
                        ports.iter().any(|p| {
                            Some(&p.name) == view.port_name.as_ref() && p.protocol == protocol
                        })
                    })
                });
                let mut a = Answer::default();
                if !same_protocol || !matches!(kind, RecordType::SRV | RecordType::ANY) {
                    return a;
                }
                let mut targets: BTreeMap<String, IpAddr> = BTreeMap::new();
                for e in &view.endpoints {
                    let (Some(port), Ok(ip)) = (e.port, IpAddr::from_str(&e.host)) else {
                        continue;
                    };
                    let Ok(target) = Name::from_ascii(format!("{}.node.shoal.", e.node)) else {
                        continue;
                    };
                    a.answers.push(Record::from_rdata(
                        name.clone(),
                        0,
                        RData::SRV(SRV::new(1, 1, port, target)),
                    ));
                    targets.insert(e.node.clone(), ip);
                }
                for (node, ip) in targets {
                    if let Ok(target) = Name::from_ascii(format!("{node}.node.shoal.")) {
                        a.additionals.push(address_record(target, ip));
                    }
                }
                a
            }
        }
    }
}

/// A lookup that failed: no such job, or the agent stops.
fn failed(e: &LookupError) -> Answer {
    match e {
        LookupError::NoJob(_) | LookupError::NoPort { .. } => Answer::code(ResponseCode::NXDomain),
        LookupError::Core(_) | LookupError::State(_) => Answer::code(ResponseCode::ServFail),
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let answer = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => {
                let query = info.query;
                if query.query_class() == DNSClass::IN || query.query_class() == DNSClass::ANY {
                    self.answer(query.name(), query.query_type()).await
                } else {
                    Answer::code(ResponseCode::Refused)
                }
            }
            Ok(_) => Answer::code(ResponseCode::NotImp),
            Err(_) => Answer::code(ResponseCode::FormErr),
        };
        metadata.response_code = answer.code;
        metadata.authoritative = answer.code != ResponseCode::Refused;
        let builder = MessageResponseBuilder::from_message_request(request);
        let response = builder.build(
            metadata,
            answer.answers.iter(),
            [].iter(),
            [].iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                debug!(error = %e, "cannot send a DNS answer");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Binds UDP and TCP on `addr` (port 0: the same free port for both).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    // With port 0, the port UDP got may be taken for TCP: try a few.
    for _ in 0..8 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}

/// Serves DNS on the sockets until `shutdown`.
pub async fn serve(
    handler: DnsHandler,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: CancellationToken,
) {
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 64);
    shutdown.cancelled().await;
    if let Err(e) = server.shutdown_gracefully().await {
        warn!(error = %e, "DNS server stopped with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_jobs_with_their_words_reversed() {
        assert_eq!(
            parse_name("frontend.web.service.shoal."),
            Question::Service {
                job: "web/frontend".into()
            }
        );
        assert_eq!(service_name("web/frontend"), "frontend.web.service.shoal.");
        assert_eq!(
            parse_name("_HTTP._tcp.Frontend.web.service.shoal"),
            Question::Port {
                job: "web/frontend".into(),
                port: "http".into(),
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            parse_name("_dns._udp.resolver.service.shoal."),
            Question::Port {
                job: "resolver".into(),
                port: "dns".into(),
                protocol: Protocol::Udp
            }
        );
        assert_eq!(
            parse_name("3ebe59ee90aa688e.node.shoal."),
            Question::Node("3ebe59ee90aa688e".into())
        );
        assert_eq!(
            parse_name("_http._sctp.web.service.shoal."),
            Question::Unknown
        );
        assert_eq!(parse_name("service.shoal."), Question::Unknown);
        assert_eq!(parse_name("shoal."), Question::Unknown);
        assert_eq!(parse_name("example.com."), Question::Foreign);
        assert_eq!(parse_name("shoal.example.com."), Question::Foreign);
    }
}
