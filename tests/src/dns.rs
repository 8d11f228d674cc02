//! A DNS client for the tests and benchmarks: one query over UDP or TCP
//! to an agent's DNS server, the messages encoded and decoded by
//! hickory-proto.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, bail};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// Query ids: distinct within a process, which is all a test needs.
static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);

/// How long a query waits for its answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks `server` for `name`'s `kind` records, over TCP or UDP.
pub fn query(
    server: SocketAddr,
    name: &str,
    kind: RecordType,
    tcp: bool,
) -> anyhow::Result<Message> {
    let mut msg = Message::query();
    msg.metadata.id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name)?, kind));
    let bytes = msg.to_vec()?;
    let answer = if tcp {
        let mut s = TcpStream::connect_timeout(&server, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        let len = u16::try_from(bytes.len())?;
        s.write_all(&len.to_be_bytes())?;
        s.write_all(&bytes)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf)?;
        buf
    } else {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send_to(&bytes, server)?;
        let mut buf = vec![0u8; 4096];
        let (n, _) = s
            .recv_from(&mut buf)
            .with_context(|| format!("no DNS answer from {server} for {name}"))?;
        buf.truncate(n);
        buf
    };
    let reply = Message::from_vec(&answer)?;
    if reply.metadata.id != msg.metadata.id {
        bail!("DNS answer from {server} has another id");
    }
    Ok(reply)
}

/// An SRV answer: target, port, and the target's address from the
/// additional section.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    /// Target name.
    pub target: String,
    /// Port.
    pub port: u16,
    /// Its address, when the answer carried it.
    pub addr: Option<IpAddr>,
}

/// The SRV records for `name` (sorted), or the response code.
pub fn srv(server: SocketAddr, name: &str, tcp: bool) -> anyhow::Result<Vec<Srv>> {
    let reply = query(server, name, RecordType::SRV, tcp)?;
    if reply.metadata.response_code != ResponseCode::NoError {
        bail!("{name}: {}", reply.metadata.response_code);
    }
    let addr_of = |target: &Name| {
        reply.additionals.iter().find_map(|r| match &r.data {
            RData::A(a) if &r.name == target => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) if &r.name == target => Some(IpAddr::V6(a.0)),
            _ => None,
        })
    };
    let mut out: Vec<Srv> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(Srv {
                target: s.target.to_ascii(),
                port: s.port,
                addr: addr_of(&s.target),
            }),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}
