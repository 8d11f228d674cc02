//! ACL tokens against real agents: the bootstrap turns the cluster secret
//! into a machine credential, policies scope tokens by resource and job
//! prefix, a revocation reaches every node within seconds, a TTL ends a
//! token (docs/security.md).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::packages::{cli_env, shoal};
use shoal_tests::{Cluster, http_send, wait_until};

fn send(
    c: &Cluster,
    via: usize,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, text) = http_send(
        method,
        &format!("{}{path}", c.agents[via].url()),
        Some(token),
        body,
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn job(name: &str) -> Value {
    json!({"name": name, "count": 0, "task": {"command": "/bin/true"}})
}

fn env(c: &Cluster, via: usize, token: &str) -> Vec<(String, String)> {
    let mut env = cli_env(c, via);
    env.retain(|(k, _)| k != "SHOAL_TOKEN");
    env.push(("SHOAL_TOKEN".into(), token.to_owned()));
    env
}

fn cli(c: &Cluster, via: usize, token: &str, args: &[&str]) -> String {
    let (ok, out, err) = shoal(&env(c, via, token), args);
    assert!(ok, "shoal {}: {out}{err}", args.join(" "));
    out
}

#[test]
fn tokens_scope_by_policy_and_a_revocation_reaches_every_node() {
    let mut c = Cluster::of("acl", 3, &[]);
    let secret = c.token();

    // Before the bootstrap the cluster secret authorizes everything.
    let (status, me) = send(&c, 1, "GET", "/v1/acl/token/self", &secret, None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["kind"], "cluster-secret");
    assert_eq!(me["bootstrapped"], false);

    // `shoal acl bootstrap` with the cluster secret: the management token.
    let out = cli(&c, 0, &secret, &["acl", "bootstrap", "--json"]);
    let boot: Value = serde_json::from_str(&out).expect("bootstrap --json");
    let mgmt = boot["token"].as_str().expect("a token").to_owned();
    assert!(mgmt.starts_with("shoalt1_"), "{boot}");
    assert_eq!(boot["policies"], json!(["management"]));
    for a in &mut c.agents {
        a.token = mgmt.clone();
    }

    // Every node comes to refuse the cluster secret on the API, and to
    // take the management token.
    for via in 0..3 {
        wait_until(
            "the bootstrap reaches every node",
            Duration::from_secs(30),
            || {
                let (s, body) = send(&c, via, "GET", "/v1/jobs", &secret, None);
                Ok(s == 401
                    && body["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("acl bootstrap"))
            },
        );
        let (s, body) = send(&c, via, "GET", "/v1/jobs", &mgmt, None);
        assert_eq!(s, 200, "{body}");
    }
    // ...but agents still fetch blobs from each other with it.
    let (s, body) = send(
        &c,
        1,
        "GET",
        &format!("/v1/artifacts/{}", "0".repeat(64)),
        &secret,
        None,
    );
    assert_ne!(s, 401, "{body}");
    // Once only.
    let (s, body) = send(&c, 2, "POST", "/v1/acl/bootstrap", &secret, None);
    assert_eq!(s, 409, "{body}");

    // A policy for web/ jobs, and tokens.
    cli(
        &c,
        0,
        &mgmt,
        &[
            "acl",
            "policy",
            "create",
            "web-deploy",
            "--rule",
            "jobs:web/=write",
            "--rule",
            "nodes=read",
        ],
    );
    let policies = cli(&c, 0, &mgmt, &["acl", "policy", "list"]);
    assert!(
        policies.contains("web-deploy") && policies.contains("jobs:web/=write"),
        "{policies}"
    );
    let make = |policy: &str, name: &str, extra: &[&str]| -> Value {
        let mut args = vec![
            "token", "create", "--policy", policy, "--name", name, "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&cli(&c, 0, &mgmt, &args)).expect("token create --json")
    };
    let ro = make("readonly", "reader", &[]);
    let web = make("web-deploy", "web-deployer", &[]);
    let ro_t = ro["token"].as_str().unwrap().to_owned();
    let web_t = web["token"].as_str().unwrap().to_owned();
    // An unknown policy is refused, naming it; nothing is made.
    let (ok, out, err) = shoal(&env(&c, 0, &mgmt), &["token", "create", "--policy", "nope"]);
    assert!(
        !ok && err.contains("no policy named \"nope\""),
        "{out}{err}"
    );

    // A job outside web/, made with the management token.
    let (s, body) = send(&c, 0, "POST", "/v1/jobs", &mgmt, Some(&job("db/a")));
    assert_eq!(s, 201, "{body}");

    // Wait until node 2 knows the tokens (they were made through node 0).
    wait_until("the tokens reach node 2", Duration::from_secs(30), || {
        Ok(send(&c, 2, "GET", "/v1/jobs", &web_t, None).0 == 200
            && send(&c, 2, "GET", "/v1/jobs", &ro_t, None).0 == 200)
    });

    // Read-only: lists jobs, 403 on run, naming what it lacks.
    let (s, body) = send(&c, 2, "GET", "/v1/jobs", &ro_t, None);
    assert_eq!(s, 200, "{body}");
    let (s, body) = send(&c, 2, "POST", "/v1/jobs", &ro_t, Some(&job("web/a")));
    assert_eq!(s, 403, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("jobs") && msg.contains("write") && msg.contains("readonly"),
        "{msg}"
    );

    // web/ only: may change web/a, not db/a.
    let (s, body) = send(&c, 2, "POST", "/v1/jobs", &web_t, Some(&job("web/a")));
    assert_eq!(s, 201, "{body}");
    let (s, body) = send(&c, 2, "POST", "/v1/jobs", &web_t, Some(&job("db/b")));
    assert_eq!(s, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("jobs:db/b=write"),
        "{body}"
    );
    let (s, body) = send(
        &c,
        2,
        "POST",
        "/v1/jobs/db%2Fa/scale",
        &web_t,
        Some(&json!({"count": 1})),
    );
    assert_eq!(s, 403, "{body}");
    let (s, body) = send(
        &c,
        2,
        "POST",
        "/v1/jobs/web%2Fa/scale",
        &web_t,
        Some(&json!({"count": 0})),
    );
    assert!(s == 200 || s == 201, "{body}");
    // A job hands its secrets to its tasks: writing one that refers to a
    // secret needs read on that secret.
    let with_secret = json!({"name": "web/s", "count": 0,
        "task": {"command": "/bin/true", "env": {"P": {"secret": "db/password"}}}});
    let (s, body) = send(&c, 2, "POST", "/v1/jobs", &web_t, Some(&with_secret));
    assert_eq!(s, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("secrets:db/password=read"),
        "{body}"
    );
    // It lists only what it may read; it cannot make tokens.
    let (_, list) = send(&c, 2, "GET", "/v1/jobs", &web_t, None);
    let names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names, ["web/a"], "{list}");
    let (s, body) = send(
        &c,
        2,
        "POST",
        "/v1/acl/tokens",
        &web_t,
        Some(&json!({"policies": ["management"]})),
    );
    assert_eq!(s, 403, "{body}");
    // The job's history names the token that changed it.
    let (_, history) = send(&c, 2, "GET", "/v1/jobs/web%2Fa/versions", &mgmt, None);
    assert_eq!(history[0]["by"], "web-deployer", "{history}");

    // Packages and triggers start jobs too: they may do only what their
    // writer could do by hand, checked when they are written.
    for (name, rules) in [
        ("web-ops", &["jobs:web/=write", "triggers=write"][..]),
        ("web-pkg", &["jobs:web/=write", "packages=write"][..]),
    ] {
        let mut args = vec!["acl", "policy", "create", name];
        for r in rules {
            args.extend(["--rule", r]);
        }
        cli(&c, 0, &mgmt, &args);
    }
    let ops_t = make("web-ops", "web-operator", &[])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let pkg_t = make("web-pkg", "web-packager", &[])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = |token: &str, path: &str, body: &Value, missing: &str| {
        let (s, resp) = send(&c, 0, "POST", path, token, Some(body));
        let msg = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(
            s == 403 && msg.contains(missing),
            "{path} {body}: {s} {resp}"
        );
    };
    let trigger = |name: &str, action: &str, what: Value| {
        let mut t = json!({"name": name, "every": "24h", "enabled": false});
        t[action] = what;
        t
    };
    refused(
        &ops_t,
        "/v1/triggers",
        &trigger(
            "web/nightly",
            "run",
            json!({"task": {"command": "/bin/true",
            "env": {"P": {"secret": "db/password"}}}}),
        ),
        "secrets:db/password=read",
    );
    refused(
        &ops_t,
        "/v1/triggers",
        &trigger("web/grow", "scale", json!({"job": "db/a", "count": 3})),
        "jobs:db/a=write",
    );
    refused(
        &ops_t,
        "/v1/triggers",
        &trigger(
            "web/cache",
            "install",
            json!({"package": "redis", "instance": "web/kv"}),
        ),
        "packages=write",
    );
    let (s, body) = send(&c, 0, "GET", "/v1/triggers", &ops_t, None);
    assert!(s == 200 && body == json!([]), "nothing made: {body}");
    let (s, body) = send(
        &c,
        0,
        "POST",
        "/v1/triggers",
        &ops_t,
        Some(&trigger(
            "web/grow",
            "scale",
            json!({"job": "web/a", "count": 0}),
        )),
    );
    assert_eq!(s, 201, "{body}");
    let install = |env: Value| {
        json!({"instance": "web/kv", "package": "kv", "jobs": [{"name": "web/kv",
            "count": 0, "task": {"command": "/bin/true", "env": env}}]})
    };
    refused(
        &pkg_t,
        "/v1/installations",
        &install(json!({"P": {"secret": "db/password"}})),
        "secrets:db/password=read",
    );
    let (s, body) = send(&c, 0, "GET", "/v1/installations/web%2Fkv", &pkg_t, None);
    assert_eq!(s, 404, "nothing installed: {body}");
    let (s, body) = send(
        &c,
        0,
        "POST",
        "/v1/installations",
        &pkg_t,
        Some(&install(json!({"P": "plain"}))),
    );
    assert_eq!(s, 201, "{body}");
    // Revoked through node 0: every node refuses it within 5 s.
    let accessor = web["accessor"].as_str().unwrap().to_owned();
    let start = Instant::now();
    cli(&c, 0, &mgmt, &["token", "revoke", &accessor]);
    let mut last = Duration::ZERO;
    for via in 0..3 {
        wait_until(
            "the revocation reaches every node",
            Duration::from_secs(5),
            || {
                let (s, body) = send(&c, via, "GET", "/v1/jobs", &web_t, None);
                Ok(s == 401
                    && body["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("revoked"))
            },
        );
        last = last.max(start.elapsed());
    }
    eprintln!("revocation refused on all 3 nodes after {last:?}");
    let listed = cli(&c, 1, &mgmt, &["token", "list"]);
    assert!(
        listed.contains(&accessor) && listed.contains("revoked"),
        "{listed}"
    );

    // A TTL ends a token.
    // (10 s: long enough to be used once even on a loaded machine.)
    let short = make("readonly", "short", &["--ttl", "10s"]);
    let short_t = short["token"].as_str().unwrap().to_owned();
    assert_eq!(send(&c, 0, "GET", "/v1/jobs", &short_t, None).0, 200);
    wait_until("the token expires", Duration::from_secs(40), || {
        let (s, body) = send(&c, 0, "GET", "/v1/jobs", &short_t, None);
        Ok(s == 401
            && body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("expired"))
    });

    // `token show` with no accessor: who am I.
    let me = cli(&c, 1, &ro_t, &["token", "show"]);
    assert!(me.contains("reader") && me.contains("readonly"), "{me}");
}
