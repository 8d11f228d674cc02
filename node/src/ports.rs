//! Host ports handed to tasks: one pool per node, shared by the process
//! and docker runtimes so that no two tasks of a node get the same port.
//!
//! A task's named port gets its `static` port when it has one, else the
//! next port of the node's range (`--port-range`) that is free in the pool
//! and on the host. The placer already keeps two tasks with the same
//! static port off one node (it knows the static ports of the tasks it
//! holds); what it cannot know is a port taken by a program shoal does
//! not run: that is found here, at start, and reported as
//! [`PortError::InUse`], after which the placer places the task elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use shoal_model::{Port, Protocol};

/// Why a task's ports could not be given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A static port is taken on this host (by another task or program).
    #[error("port {port} ({name}) in use on this host")]
    InUse {
        /// The port's name.
        name: String,
        /// The static port.
        port: u16,
    },
    /// Every port of the range is taken.
    #[error(
        "no free host port left in {range} for port {name}; widen the node's --port-range or stop tasks"
    )]
    Exhausted {
        /// The port's name.
        name: String,
        /// The node's range, `first-last`.
        range: String,
    },
}

/// Host ports handed to tasks, from a configured range.
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

    /// A host port for each of `ports`: its static one, or one from the
    /// range; all or none (what was taken is given back on an error).
    pub(crate) fn allocate(
        &mut self,
        ports: &[Port],
        free_on_host: impl Fn(u16, Protocol) -> bool,
    ) -> Result<BTreeMap<String, u16>, PortError> {
        let mut got = BTreeMap::new();
        // Static ones first, so that a range port never takes one of them.
        let (fixed, ranged): (Vec<&Port>, Vec<&Port>) =
            ports.iter().partition(|p| p.static_port.is_some());
        for p in fixed {
            let port = p.static_port.unwrap_or_default();
            if self.used.contains(&port) || !free_on_host(port, p.protocol) {
                self.give_back(got.values().copied());
                return Err(PortError::InUse {
                    name: p.name.clone(),
                    port,
                });
            }
            self.used.insert(port);
            got.insert(p.name.clone(), port);
        }
        for p in ranged {
            match self.take(p.protocol, &free_on_host) {
                Some(port) => {
                    got.insert(p.name.clone(), port);
                }
                None => {
                    self.give_back(got.values().copied());
                    return Err(PortError::Exhausted {
                        name: p.name.clone(),
                        range: self.range(),
                    });
                }
            }
        }
        Ok(got)
    }
}

/// The node's pool, shared by its runtimes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HostPorts(Arc<Mutex<PortPool>>);

impl HostPorts {
    /// The pool of a node (`seed`: its id) over `range`, inclusive.
    pub fn new(range: (u16, u16), seed: &str) -> HostPorts {
        HostPorts(Arc::new(Mutex::new(PortPool::new(range, seed))))
    }

    /// Host ports for `ports` (see [`PortPool::allocate`]), checked free on
    /// this host.
    pub(crate) fn allocate(&self, ports: &[Port]) -> Result<BTreeMap<String, u16>, PortError> {
        if ports.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.0
            .lock()
            .expect("lock")
            .allocate(ports, PortPool::free_on_host)
    }

    /// Marks `ports` as handed out (tasks adopted after a restart).
    pub(crate) fn hold(&self, ports: &BTreeMap<String, u16>) {
        self.0.lock().expect("lock").hold(ports.values().copied());
    }

    /// Takes `ports` back (their task ended).
    pub(crate) fn give_back(&self, ports: &BTreeMap<String, u16>) {
        self.0
            .lock()
            .expect("lock")
            .give_back(ports.values().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, fixed: Option<u16>) -> Port {
        Port {
            name: name.into(),
            container_port: None,
            static_port: fixed,
            protocol: Protocol::Tcp,
        }
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

    #[test]
    fn static_ports_are_taken_as_given_and_never_handed_out_from_the_range() {
        let host = |p: u16, _: Protocol| p != 47300;
        let mut pool = PortPool::new((47200, 47201), "n1");
        let got = pool
            .allocate(&[port("a", None), port("b", Some(47201))], host)
            .unwrap();
        assert_eq!(got["b"], 47201);
        assert_eq!(got["a"], 47200, "the range's other port: {got:?}");
        // Used by the first task: refused, naming the port.
        let err = pool.allocate(&[port("c", Some(47201))], host).unwrap_err();
        assert_eq!(err.to_string(), "port 47201 (c) in use on this host");
        // Taken on the host by a program shoal does not run.
        let err = pool.allocate(&[port("d", Some(47300))], host).unwrap_err();
        assert!(matches!(err, PortError::InUse { port: 47300, .. }));
        // The range is used up: nothing of the failed task stays taken.
        let err = pool
            .allocate(&[port("e", Some(47400)), port("f", None)], host)
            .unwrap_err();
        assert!(matches!(err, PortError::Exhausted { .. }), "{err}");
        pool.give_back(got.values().copied());
        let again = pool
            .allocate(&[port("e", Some(47400)), port("f", None)], host)
            .unwrap();
        assert_eq!(again.len(), 2);
    }
}
