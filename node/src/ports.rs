//! Host ports handed to tasks: a node's pool of ports from its configured
//! range, and the environment variable that tells a task its port.

use std::collections::BTreeSet;

use shoal_model::Protocol;

/// Host ports handed to containers, from a configured range.
#[derive(Debug)]
pub(crate) struct PortPool {
    first: u16,
    last: u16,
    next: u16,
    used: BTreeSet<u16>,
}

impl PortPool {
    /// A pool over `range` whose first pick depends on `seed` (the node
    /// id), so that agents sharing a host rarely race for the same port.
    pub(crate) fn new(range: (u16, u16), seed: &str) -> PortPool {
        // FNV-1a: stable, and enough to spread starting points.
        let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let size = u64::from(range.1 - range.0) + 1;
        let offset = u16::try_from(hash % size).unwrap_or(0);
        PortPool {
            first: range.0,
            last: range.1,
            next: range.0 + offset,
            used: BTreeSet::new(),
        }
    }

    /// A port free in the pool and, by `free_on_host`, on the host.
    pub(crate) fn take(
        &mut self,
        protocol: Protocol,
        free_on_host: impl Fn(u16, Protocol) -> bool,
    ) -> Option<u16> {
        let size = u32::from(self.last - self.first) + 1;
        for _ in 0..size {
            let p = self.next;
            self.next = if p >= self.last { self.first } else { p + 1 };
            if self.used.contains(&p) {
                continue;
            }
            if free_on_host(p, protocol) {
                self.used.insert(p);
                return Some(p);
            }
        }
        None
    }

    /// Whether the host has `port` free, checked by binding it.
    pub(crate) fn free_on_host(port: u16, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Tcp => std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
            Protocol::Udp => std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok(),
        }
    }

    /// The range, `first-last`, for messages.
    pub(crate) fn range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }

    /// Marks `ports` as handed out (to tasks adopted after a restart).
    pub(crate) fn hold(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.used.extend(ports);
    }

    /// Takes `ports` back.
    pub(crate) fn give_back(&mut self, ports: impl IntoIterator<Item = u16>) {
        for p in ports {
            self.used.remove(&p);
        }
    }
}

/// `SHOAL_PORT_<NAME>`: upper case, other than letters and digits → `_`.
pub fn port_env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_become_env_names() {
        assert_eq!(port_env_name("http"), "HTTP");
        assert_eq!(port_env_name("admin-api"), "ADMIN_API");
    }

    #[test]
    fn the_port_pool_hands_out_each_port_once_and_takes_them_back() {
        // A host on which port 47102 is taken by someone else.
        let host = |p: u16, _: Protocol| p != 47102;
        let mut pool = PortPool::new((47100, 47109), "3ebe59ee90aa688e");
        let mut got = BTreeSet::new();
        while let Some(p) = pool.take(Protocol::Tcp, host) {
            assert!((47100..=47109).contains(&p));
            assert!(got.insert(p), "port {p} handed out twice");
        }
        assert_eq!(got.len(), 9, "every port but the host's: {got:?}");
        assert!(!got.contains(&47102));
        pool.give_back([47105]);
        assert_eq!(pool.take(Protocol::Tcp, host), Some(47105));
        assert_eq!(pool.take(Protocol::Tcp, host), None);
    }
}
