//! Package installations in the replicated state: their own documents
//! beside the jobs (never listed as jobs), revisions that keep the user's
//! options, rollback, uninstall as a tombstone, replication to a peer.

use serde_json::json;
use shoal_gossip::NodeId;
use shoal_state::{InstallOp, JobEvent, StateConfig, Store, SyncRequest, installation_doc};

const T0: u64 = 1_700_000_000_000;

fn store(node: u64) -> Store {
    Store::new(NodeId(node), 1, StateConfig::default())
}

fn install(s: &mut Store, instance: &str) -> Result<shoal_state::Installation, String> {
    s.install_write(
        instance,
        InstallOp::Install {
            package: "redis".into(),
            version: "1.0.0".into(),
            repository: "builtin".into(),
            options: json!({"replicas": 2}),
            jobs: vec![
                json!({"name": format!("{instance}/primary")}),
                json!({"name": format!("{instance}/replicas")}),
            ],
        },
        T0,
    )
    .map_err(|e| e.to_string())
}

#[test]
fn revisions_keep_the_users_options_and_roll_back() {
    let mut s = store(1);
    let i = install(&mut s, "r1").unwrap();
    assert_eq!((i.revision, i.version.as_str()), (1, "1.0.0"));
    assert_eq!(i.options, json!({"replicas": 2}));
    let err = install(&mut s, "r1").unwrap_err();
    assert!(err.contains("exists") && err.contains("upgrade"), "{err}");
    let up = s
        .install_write(
            "r1",
            InstallOp::Upgrade {
                version: "1.1.0".into(),
                options: json!({"replicas": 3}),
                jobs: vec![json!({"name": "r1/primary", "count": 3})],
            },
            T0 + 1000,
        )
        .unwrap();
    assert_eq!((up.revision, up.version.as_str()), (2, "1.1.0"));
    let back = s
        .install_write("r1", InstallOp::Rollback { to: 1 }, T0 + 2000)
        .unwrap();
    assert_eq!((back.revision, back.version.as_str()), (3, "1.0.0"));
    assert_eq!(back.options, json!({"replicas": 2}));
    assert_eq!(back.revisions[2].op, "rollback");
    assert_eq!(back.jobs, ["r1/primary", "r1/replicas"]);
    assert_eq!(back.revisions[2].specs, back.revisions[0].specs);
    assert_eq!(up.jobs, ["r1/primary"]);
    let err = s
        .install_write("r1", InstallOp::Rollback { to: 9 }, T0)
        .unwrap_err();
    assert!(err.to_string().contains("no revision 9"), "{err}");
    // Never a job.
    assert!(s.jobs(true).is_empty());
    assert_eq!(s.view(&installation_doc("r1")), None);
}

#[test]
fn instances_side_by_side_uninstall_one_and_replicate() {
    let (mut a, mut b) = (store(1), store(2));
    install(&mut a, "r1").unwrap();
    install(&mut a, "r2").unwrap();
    a.install_write("r1", InstallOp::Uninstall, T0 + 10)
        .unwrap();
    assert_eq!(
        a.installations(false)
            .iter()
            .map(|i| i.instance.as_str())
            .collect::<Vec<_>>(),
        ["r2"]
    );
    assert!(a.installation("r1").unwrap().deleted);
    while let Some(p) = a.poll_push() {
        let _ = b.handle_request(
            NodeId(1),
            SyncRequest::Changes {
                docs: p.docs,
                forward: false,
            },
        );
    }
    let events: Vec<JobEvent> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, JobEvent::Installation { name, .. } if name == "r2")),
        "{events:?}"
    );
    assert_eq!(b.installations(true).len(), 2);
    assert_eq!(b.installation("r2").unwrap().jobs.len(), 2);
    assert!(b.installation("r1").unwrap().deleted);
    // Installed again after the uninstall: a fresh first revision.
    let again = install(&mut a, "r1").unwrap();
    assert!(!again.deleted);
    assert_eq!(again.revision, 1);
    assert_ne!(
        a.root_digest(),
        b.root_digest(),
        "b has not heard of it yet"
    );
}
