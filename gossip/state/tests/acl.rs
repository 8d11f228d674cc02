//! ACL policies and tokens in the replicated state: they replicate to a
//! peer (with an event), survive a restart from the persisted changes, a
//! revocation merges to revoked whatever it meets, and the bootstrap
//! happens once per replica's knowledge.

use shoal_gossip::NodeId;
use shoal_model::acl::{Policy, Rule};
use shoal_state::{JobEvent, NewToken, StateConfig, Store, SyncRequest};

const T0: u64 = 1_700_000_000_000;

fn store(node: u64) -> Store {
    Store::new(NodeId(node), 1, StateConfig::default())
}

fn sync(from: &mut Store, from_id: u64, to: &mut Store) {
    while let Some(p) = from.poll_push() {
        let _ = to.handle_request(
            NodeId(from_id),
            SyncRequest::Changes {
                docs: p.docs,
                forward: false,
            },
        );
    }
}

fn token(accessor: &str, policies: &[&str], bootstrap: bool) -> NewToken {
    NewToken {
        accessor: accessor.into(),
        name: format!("t-{accessor}"),
        policies: policies.iter().map(|p| (*p).to_owned()).collect(),
        secret_sha256: "ab".repeat(32),
        created_by: "test".into(),
        expires_ms: None,
        bootstrap,
    }
}

#[test]
fn tokens_and_policies_replicate_survive_a_restart_and_stay_revoked() {
    let (mut a, mut b) = (store(1), store(2));
    a.acl_token_create(&token("00000000000000b0", &["management"], true), T0)
        .unwrap();
    assert!(a.acl_bootstrapped());
    let again = a
        .acl_token_create(&token("00000000000000b1", &["management"], true), T0)
        .unwrap_err();
    assert!(
        again.to_string().contains("bootstrapped already"),
        "{again}"
    );
    a.acl_policy_put(
        &Policy {
            name: "web".into(),
            description: "web jobs".into(),
            rules: vec![Rule::parse("jobs:web/=write").unwrap()],
        },
        T0 + 1,
    )
    .unwrap();
    a.acl_token_create(&token("00000000000000c0", &["web"], false), T0 + 2)
        .unwrap();
    sync(&mut a, 1, &mut b);
    assert!(b.acl_bootstrapped());
    assert_eq!(b.acl_policies(), a.acl_policies());
    assert_eq!(b.acl_tokens(), a.acl_tokens());
    assert_eq!(b.acl_tokens()[1].secret_sha256, "ab".repeat(32));
    let events: Vec<JobEvent> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, JobEvent::Acl { name, .. } if name == "00000000000000c0")),
        "{events:?}"
    );
    assert!(a.jobs(true).is_empty(), "ACL documents are not jobs");

    // Revoked on b while a, not knowing, writes nothing to it: merged,
    // it is revoked on both.
    b.acl_token_revoke("00000000000000c0", T0 + 3).unwrap();
    sync(&mut b, 2, &mut a);
    assert!(a.acl_tokens()[1].revoked);

    // A restart from what was persisted keeps them.
    let mut restarted = store(1);
    for op in a.snapshot() {
        restarted.restore(op);
    }
    assert_eq!(restarted.acl_tokens(), a.acl_tokens());
    assert_eq!(restarted.acl_policies(), a.acl_policies());
    assert!(
        restarted.rejected().is_empty(),
        "{:?}",
        restarted.rejected()
    );
}

#[test]
fn a_forgotten_node_replicates_survives_a_restart_and_stays_forgotten() {
    let (mut a, mut b) = (store(1), store(2));
    let bad = a.forget_node("not-an-id", "x", None, T0).unwrap_err();
    assert!(bad.to_string().contains("16 lower-case hex"), "{bad}");
    let f = a
        .forget_node("00000000000000d0", "web-3", Some("ops"), T0)
        .unwrap();
    assert_eq!((f.name.as_str(), f.by.as_deref()), ("web-3", Some("ops")));
    // Again: the first record stands.
    let again = a
        .forget_node("00000000000000d0", "other", None, T0 + 5)
        .unwrap();
    assert_eq!(again, f);
    sync(&mut a, 1, &mut b);
    assert_eq!(b.forgotten_nodes(), vec![f.clone()]);
    let events: Vec<JobEvent> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, JobEvent::Acl { name, .. } if name == "00000000000000d0")),
        "{events:?}"
    );
    let mut restarted = store(2);
    for op in b.snapshot() {
        restarted.restore(op);
    }
    assert_eq!(restarted.forgotten_nodes(), vec![f]);
    assert!(
        restarted.rejected().is_empty(),
        "{:?}",
        restarted.rejected()
    );
}

#[test]
fn the_gossip_keyring_replicates_and_a_removed_key_stays_removed() {
    let (mut a, mut b) = (store(1), store(2));
    assert!(a.gossip_key_install("XYZ", "s", None, T0).is_err());
    a.gossip_key_install("0000abcd", "sealed-1", Some("ops"), T0)
        .unwrap();
    a.gossip_key_use("0000abcd", None, T0 + 1).unwrap();
    sync(&mut a, 1, &mut b);
    assert_eq!(b.gossip_keys(), a.gossip_keys());
    assert_eq!(b.gossip_primary().unwrap().id, "0000abcd");
    // The cluster key (no sealed value) is recorded only to be removed.
    b.gossip_key_remove("00001234", None, T0 + 2).unwrap();
    b.gossip_key_remove("0000abcd", None, T0 + 3).unwrap();
    sync(&mut b, 2, &mut a);
    let keys = a.gossip_keys();
    assert!(
        keys.iter().all(|k| k.removed && k.sealed.is_empty()),
        "{keys:?}"
    );
    let again = a
        .gossip_key_install("0000abcd", "sealed-2", None, T0 + 4)
        .unwrap_err();
    assert!(again.to_string().contains("cannot come back"), "{again}");
    let mut restarted = store(1);
    for op in a.snapshot() {
        restarted.restore(op);
    }
    assert_eq!(restarted.gossip_keys(), keys);
    assert!(
        restarted.rejected().is_empty(),
        "{:?}",
        restarted.rejected()
    );
}
