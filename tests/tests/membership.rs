//! Membership with real agents on loopback.

use std::net::UdpSocket;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_gossip::{
    Capacity, Config, FreeClass, Instant, MemberMeta, Membership, NodeId, NodeIdentity,
    PacketSecurity,
};
use shoal_node::token::ClusterSecret;
use shoal_tests::{Cluster, Spec, wait_until};

const CONVERGE: Duration = Duration::from_secs(60);

#[test]
fn twelve_agents_detect_failure_and_departure_and_take_back_a_restarted_node() {
    let mut rng = ChaCha8Rng::seed_from_u64(shoal_tests::test_seed());
    let mut c = Cluster::new();
    c.found("n0");
    for i in 1..12 {
        let via = rng.random_range(0..i);
        c.join(&format!("n{i}"), via);
    }
    c.wait_all_alive(12, CONVERGE);

    // kill -9: everyone else reports it failed.
    let killed = 3 + rng.random_range(0..4);
    let killed_id = c.agents[killed].info.node_id.clone();
    c.agents[killed].kill9();
    c.wait_all_report(std::slice::from_ref(&killed_id), "failed", CONVERGE);

    // SIGTERM: everyone else reports it left, and it exits cleanly.
    let leaver = 8;
    let leaver_id = c.agents[leaver].info.node_id.clone();
    let status = c.agents[leaver].terminate().unwrap();
    assert!(status.success(), "SIGTERM exit status {status}");
    c.wait_all_report(std::slice::from_ref(&leaver_id), "left", CONVERGE);

    // The killed one, restarted from its data dir with no --join, is back
    // alive with the same id and a later generation.
    c.agents[killed].restart().unwrap();
    assert_eq!(c.agents[killed].info.node_id, killed_id);
    c.wait_all_report(std::slice::from_ref(&killed_id), "alive", CONVERGE);
    let seen = c.agents[0]
        .nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.id == killed_id)
        .unwrap();
    assert_eq!(seen.generation, 2, "{seen:?}");
    // The one that left is still reported left, not failed, by the members
    // that saw it go (the restarted node only learns live members).
    let witnesses: Vec<usize> = c.running().into_iter().filter(|i| *i != killed).collect();
    c.wait_report_by(
        &witnesses,
        std::slice::from_ref(&leaver_id),
        "left",
        CONVERGE,
    );
}

#[test]
fn an_agent_with_another_clusters_token_never_gets_in() {
    let mut a = Cluster::new();
    a.found("a0");
    a.join("a1", 0);
    a.wait_all_alive(2, CONVERGE);

    let mut b = Cluster::new();
    b.found("b0");
    let intruder = b.start(&Spec {
        name: "intruder".into(),
        join: vec![a.agents[0].info.gossip],
        token: Some(b.token()),
        ..Default::default()
    });

    // a0 drops its hellos as sealed under an unknown key …
    let a0 = &a.agents[0];
    wait_until("a0 to count rejected datagrams", CONVERGE, || {
        Ok(a0.metric("shoal_gossip_dropped_packets_total{reason=\"unknown_key\"}")? >= 3.0)
    });
    // … and the intruder appears nowhere in cluster a, nor a in it.
    let intruder_id = b.agents[intruder].info.node_id.clone();
    for agent in &a.agents {
        let nodes = agent.nodes().unwrap();
        assert!(nodes.iter().all(|n| n.id != intruder_id), "{nodes:?}");
        assert_eq!(nodes.len(), 2);
    }
    let seen_by_intruder = b.agents[intruder].nodes().unwrap();
    assert!(seen_by_intruder.iter().all(|n| n.id != a0.info.node_id));
    assert!(b.agents[intruder].log().contains("retrying"));
}

fn meta() -> MemberMeta {
    MemberMeta {
        name: "forger".into(),
        gossip_addr: "127.0.0.1:9".parse().unwrap(),
        rpc_addr: "127.0.0.1:9".parse().unwrap(),
        api_addr: "127.0.0.1:9".parse().unwrap(),
        api_tls: false,
        gossip_keys: Vec::new(),
        dc: String::new(),
        zone: String::new(),
        region: String::new(),
        labels: Default::default(),
        capacity: Capacity::default(),
        runtimes: vec![],
        agent_version: String::new(),
        free_class: FreeClass::IDLE,
        isolation: String::new(),
        draining: false,
    }
}

#[test]
fn garbage_truncated_and_replayed_datagrams_leave_the_node_whole() {
    let mut c = Cluster::new();
    c.found("n0");
    c.join("n1", 0);
    c.join("n2", 0);
    c.wait_all_alive(3, CONVERGE);
    let target = c.agents[0].info.gossip;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();

    // Garbage of every size up to a jumbo datagram.
    let mut rng = ChaCha8Rng::seed_from_u64(shoal_tests::test_seed());
    for len in (0..9000).step_by(7) {
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        sock.send_to(&junk, target).unwrap();
    }
    // A genuine datagram of this cluster (sealed with its secret), then its
    // truncations, bit flips and replays.
    let secret = ClusterSecret::from_token(&c.token()).unwrap();
    let mut forger = Membership::new(
        Instant::ZERO,
        NodeIdentity::new(NodeId(42), sock.local_addr().unwrap(), 1),
        meta(),
        Config::test(),
        PacketSecurity::sealed(secret.bytes()),
        7,
    )
    .unwrap();
    forger.join(Instant::ZERO, &[target]);
    let genuine = forger.poll_transmit().unwrap().payload;
    for cut in 0..genuine.len() {
        sock.send_to(&genuine[..cut], target).unwrap();
    }
    for i in 0..genuine.len() {
        let mut bad = genuine.clone();
        bad[i] ^= 0x10;
        sock.send_to(&bad, target).unwrap();
    }
    for _ in 0..50 {
        sock.send_to(&genuine, target).unwrap();
    }

    let n0 = &c.agents[0];
    // The burst above may overflow the node's socket buffer on a loaded
    // machine (the kernel then drops datagrams before the node sees them),
    // so each check sends a few more of every kind.
    wait_until("n0 to count every kind of drop", CONVERGE, || {
        let m = |r: &str| {
            n0.metric(&format!(
                "shoal_gossip_dropped_packets_total{{reason=\"{r}\"}}"
            ))
        };
        let counted = m("replay")? >= 49.0
            && m("truncated")? > 0.0
            && m("auth")? > 0.0
            && m("version")? > 0.0;
        if !counted {
            let mut bad = genuine.clone();
            if let Some(last) = bad.last_mut() {
                *last ^= 0x10;
            }
            sock.send_to(&genuine[..1], target)?;
            sock.send_to(&bad, target)?;
            sock.send_to(&[0xff; 64], target)?;
            for _ in 0..5 {
                sock.send_to(&genuine, target)?;
            }
        }
        Ok(counted)
    });
    // The node still answers and still has its members, and they it.
    c.wait_all_alive(3, CONVERGE);
    assert!(c.agents[0].is_running());
}

#[test]
fn a_graceful_stop_by_sigint_is_a_departure_too() {
    let mut c = Cluster::new();
    c.found("n0");
    c.join("n1", 0);
    c.join("n2", 1);
    c.wait_all_alive(3, CONVERGE);
    let id = c.agents[2].info.node_id.clone();
    let status = c.agents[2]
        .stop_with(nix::sys::signal::Signal::SIGINT)
        .unwrap();
    assert!(status.success());
    c.wait_all_report(&[id], "left", CONVERGE);
}
