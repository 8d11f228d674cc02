//! A gossip datagram from anyone on the network. Raw bytes first (the
//! seal's header checks), then the same bytes as the plaintext of a
//! datagram that passes the seal (with the simulator's plaintext mode, so
//! that the fuzzer reaches the envelope and SWIM decoders behind the
//! authentication a real key would stop it at), each into a formed
//! member's state machine, whose outputs are drained.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shoal_gossip::{
    Capacity, Config, FreeClass, Instant, MemberMeta, Membership, NodeId, NodeIdentity,
    PacketSecurity, RuntimeInfo, SealHeader, seal,
};

fn meta(addr: SocketAddr) -> MemberMeta {
    MemberMeta {
        name: "fuzz".into(),
        gossip_addr: addr,
        rpc_addr: addr,
        api_addr: addr,
        api_tls: false,
        gossip_keys: Vec::new(),
        dc: "dc1".into(),
        zone: "z1".into(),
        region: "global".into(),
        labels: Default::default(),
        capacity: Capacity {
            cpus_milli: 2000,
            memory_mb: 1024,
            disk_mb: 10_000,
            gpus: 0,
        },
        runtimes: vec![RuntimeInfo {
            name: "process".into(),
            version: "fuzz".into(),
        }],
        agent_version: "fuzz".into(),
        free_class: FreeClass::IDLE,
        isolation: "none".into(),
        draining: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let me: SocketAddr = "10.0.0.1:5481".parse().unwrap();
    let peer: SocketAddr = "10.0.0.2:5481".parse().unwrap();
    let mut m = Membership::new(
        Instant::ZERO,
        NodeIdentity::new(NodeId(1), me, 1),
        meta(me),
        Config::test(),
        PacketSecurity::InsecurePlaintext,
        7,
    )
    .expect("a valid member");
    let now = Instant::ZERO + Duration::from_millis(5);
    m.handle_datagram(now, peer, data);
    let header = SealHeader {
        sender: NodeId(2),
        bump: 1,
        seq: 1,
        salt: 0,
    };
    let sealed = seal(&PacketSecurity::InsecurePlaintext, &header, data);
    m.handle_datagram(now, peer, &sealed);
    while m.poll_transmit().is_some() {}
    while m.poll_event().is_some() {}
    if let Some((at, token)) = m.poll_timeout() {
        m.handle_timer(at, token);
    }
});
