//! Triggers with real agents: a cost-gated trigger fires only once a price
//! feed served by the test drops below its threshold, and its run's tasks
//! run only on the nodes whose `price_per_hour` label makes the label
//! condition true; bad trigger specs are refused naming the field, with
//! nothing written; the issue's `cheap-report` example is accepted by
//! `shoal trigger create` as written, and the CLI shows, explains,
//! pauses, resumes, runs and deletes it.
//!
//! Every task carries the test's marker (`SHOAL_TEST_MARKER`), and
//! [`KillMarked`] kills any left when the test ends.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, Spec, marker, run_shoal, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// A price feed on 127.0.0.1:0 answering `{"price": P}` to every request;
/// the returned handle sets P.
fn price_feed(start: f64) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the feed");
    let url = format!("http://{}/price", listener.local_addr().expect("addr"));
    let price = Arc::new(AtomicU64::new(start.to_bits()));
    let p = price.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let body = json!({"price": f64::from_bits(p.load(Ordering::SeqCst))}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, price)
}

fn runs(c: &Cluster, via: usize, trigger: &str) -> Vec<Value> {
    match c.agents[via].get_any(&format!("/v1/runs?trigger={trigger}")) {
        Ok((200, v)) => v.as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[test]
fn a_cost_trigger_fires_only_below_the_price_and_runs_only_on_cheap_nodes() {
    let m = marker("trigcost");
    let _cleanup = KillMarked(m.clone());
    let prices = ["0.02", "0.08", "0.02"];
    let mut c = Cluster::new();
    for (i, price) in prices.iter().enumerate() {
        let mut spec = Spec::named(&format!("n{i}"));
        spec.args = ["--cpus", "2", "--memory-mb", "1024", "--label"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        spec.args.push(format!("price_per_hour={price}"));
        if i > 0 {
            spec.join = vec![c.agents[0].info.gossip];
            spec.token = Some(c.token());
        }
        c.start(&spec);
    }
    c.wait_all_alive(3, SETTLE);
    let cheap: Vec<String> = c
        .agents
        .iter()
        .zip(prices)
        .filter(|(_, p)| *p == "0.02")
        .flat_map(|(a, _)| [a.info.node_id.clone(), a.info.name.clone()])
        .collect();

    let (url, price) = price_feed(0.09);
    let out = c.root.path().join("runs");
    let trigger = json!({
        "name": "cheap",
        "every": "2s",
        "starting_deadline": "1m",
        "concurrency": "forbid",
        "when": [
            {"signal": "http_json", "url": url, "pointer": "/price", "every": "1s", "op": "<", "value": 0.05},
            {"signal": "min(label.price_per_hour)", "op": "<", "value": 0.05}
        ],
        "run": {
            "type": "batch",
            "count": 2,
            "task": {
                "runtime": "process",
                "command": "/bin/sh",
                "args": ["-c", format!("echo $SHOAL_RUN_ID $SHOAL_NODE >> {}", out.display())],
                "env": {"SHOAL_TEST_MARKER": m},
                "resources": {"cpus": 0.25, "memory_mb": 32}
            }
        }
    });
    let (status, body) = c.agents[1].post("/v1/triggers", &trigger).unwrap();
    assert_eq!(status, 201, "{body}");

    // While the feed says 0.09, slots come and go without a run: each is
    // recorded in the ledger (superseded by the next while it waited).
    wait_until("two slots handled without firing", SETTLE, || {
        let (_, t) = c.agents[0].get_any("/v1/triggers/cheap")?;
        let handled = t["recent"].as_array().map_or(0, Vec::len);
        Ok(handled >= 2)
    });
    let (_, t) = c.agents[2].get_any("/v1/triggers/cheap").unwrap();
    assert!(
        t["recent"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["outcome"] == "skipped"),
        "{t}"
    );
    assert!(runs(&c, 0, "cheap").is_empty(), "no run at 0.09");
    let (_, e) = c.agents[0].get_any("/v1/triggers/cheap/explain").unwrap();
    let feed = &e["conditions"][0];
    assert_eq!(feed["value"], json!(0.09), "{e}");
    assert_eq!(feed["result"], json!(false), "{e}");
    assert_eq!(e["conditions"][1]["value"], json!(0.02), "{e}");

    // The price drops: a run appears, and completes.
    price.store(0.01f64.to_bits(), Ordering::SeqCst);
    let mut first = Value::Null;
    wait_until("a run of cheap", SETTLE, || {
        let r = runs(&c, 2, "cheap");
        first = r.first().cloned().unwrap_or(Value::Null);
        Ok(!r.is_empty())
    });
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("cheap@"), "{first}");
    assert!(
        first["started"].is_string() && first["job"].is_string(),
        "{first}"
    );
    wait_until("the first run complete", SETTLE, || {
        Ok(runs(&c, 0, "cheap")
            .iter()
            .any(|r| r["id"] == id.as_str() && r["status"] == "complete"))
    });
    // Its tasks ran on the 0.02 nodes only, once each, with the run's id.
    let lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("{id} ")))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        let node = l.split(' ').nth(1).unwrap_or_default();
        assert!(cheap.iter().any(|n| n == node), "{l} ran on a 0.08 node");
    }
    // The run's job carries the placement constraint the cost bound.
    let (_, job) = c.agents[0]
        .get_any(&format!(
            "/v1/jobs/{}",
            first["job"].as_str().unwrap().replace('/', "%2F")
        ))
        .unwrap();
    assert!(
        job["spec"]["constraints"]
            .to_string()
            .contains("price_per_hour"),
        "{job}"
    );

    // Explain shows the values that decided it.
    let (_, e) = c.agents[1].get_any("/v1/triggers/cheap/explain").unwrap();
    let fired = e["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["run_id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {e}"));
    assert_eq!(fired["outcome"], "fired", "{fired}");
    assert_eq!(fired["values"][0]["value"], json!(0.01), "{fired}");
    assert_eq!(fired["values"][1]["value"], json!(0.02), "{fired}");

    // The CLI lists it.
    let env = [
        ("SHOAL_ADDR", c.agents[2].url()),
        ("SHOAL_TOKEN", c.token()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, listed, err) = run_shoal(&["runs", "cheap", "--json"], &env);
    assert!(status.success(), "{err}");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str() && r["status"].is_string() && r["started"].is_string()),
        "{listed}"
    );
    // Stop firing before the agents go.
    let (status, _) = c.agents[0].delete("/v1/triggers/cheap").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn bad_triggers_are_refused_naming_the_field_and_the_example_is_accepted() {
    let m = marker("trigbad");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of("b", 1, &["--cpus", "2", "--memory-mb", "1024"]);
    let run = json!({"task": {"runtime": "process", "command": "/bin/true"}});
    let cases = [
        (
            json!({"name": "t", "cron": "61 * * * *", "run": run}),
            "cron",
        ),
        (
            json!({"name": "t", "cron": "30 2 * * *", "timezone": "Mars/Olympus", "run": run}),
            "timezone",
        ),
        (
            json!({"name": "t", "every": "1m", "when": [{"signal": "price", "op": "<", "value": 1}], "run": run}),
            "when[0].signal",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = c.agents[0].post("/v1/triggers", &body).unwrap();
        assert!((400..500).contains(&status), "{status} {err}");
        assert_eq!(err["error"]["field"], field, "{err}");
        assert!(err["error"]["message"].is_string(), "{err}");
    }
    let (_, list) = c.agents[0].get_any("/v1/triggers").unwrap();
    assert_eq!(list, json!([]), "nothing written");

    // The issue's example, as written, through the CLI.
    let example = r#"name = "cheap-report"
every = "5s"                 # or: cron = "30 2 * * *" + timezone = "Europe/Berlin"
starting_deadline = "1m"
concurrency = "forbid"

[[when]]                     # an external price feed
signal = "http_json"
url = "http://127.0.0.1:8080/price"
pointer = "/price"
op = "<"
value = 0.05

[[when]]                     # the cheapest node with room for the run
signal = "min(label.price_per_hour)"
op = "<"
value = 0.05

[run]                        # the action: a batch job, as in a job file
type = "batch"
count = 2
[run.task]
runtime = "process"
command = "/bin/sh"
args = ["-c", "echo run $SHOAL_RUN_ID"]
"#;
    let file = c.root.path().join("cheap-report.toml");
    std::fs::write(&file, example).unwrap();
    let env = [
        ("SHOAL_ADDR", c.agents[0].url()),
        ("SHOAL_TOKEN", c.token()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let shoal = |args: &[&str]| {
        let (status, out, err) = run_shoal(args, &env);
        assert!(status.success(), "shoal {args:?}: {err}");
        out
    };
    shoal(&["trigger", "create", file.to_str().unwrap()]);
    let listed = shoal(&["trigger", "list"]);
    assert!(
        listed.contains("cheap-report") && listed.contains("every 5s"),
        "{listed}"
    );
    let shown: Value =
        serde_json::from_str(&shoal(&["trigger", "show", "cheap-report", "--json"])).unwrap();
    assert_eq!(shown["spec"]["every"], "5s", "{shown}");
    assert!(
        shown["next_slot"]["id"]
            .as_str()
            .is_some_and(|s| s.starts_with("cheap-report@")),
        "{shown}"
    );
    // Nothing serves 127.0.0.1:8080 here: explain says why it waits.
    wait_until("the feed's error in explain", SETTLE, || {
        let e: Value =
            serde_json::from_str(&shoal(&["trigger", "explain", "cheap-report", "--json"]))?;
        Ok(e["conditions"][0]["error"].is_string())
    });
    let text = shoal(&["trigger", "explain", "cheap-report"]);
    assert!(
        text.contains("http_json") && text.contains("min(label.price_per_hour)"),
        "{text}"
    );
    shoal(&["trigger", "pause", "cheap-report"]);
    let shown: Value =
        serde_json::from_str(&shoal(&["trigger", "show", "cheap-report", "--json"])).unwrap();
    assert_eq!(shown["paused"], true);
    shoal(&["trigger", "resume", "cheap-report"]);
    // A manual run runs whatever the conditions.
    shoal(&["trigger", "run", "cheap-report"]);
    let runs: Value = serde_json::from_str(&shoal(&["runs", "cheap-report", "--json"])).unwrap();
    let run = &runs[0];
    assert!(
        run["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("cheap-report@manual-")),
        "{runs}"
    );
    assert!(
        run["status"].is_string() && run["started"].is_string(),
        "{runs}"
    );
    let job = run["job"].as_str().unwrap().to_owned();
    wait_until("the manual run complete", SETTLE, || {
        let r: Value = serde_json::from_str(&shoal(&["runs", "cheap-report", "--json"]))?;
        Ok(r[0]["status"] == "complete")
    });
    assert!(job.starts_with("cheap-report/run-manual-"), "{job}");
    shoal(&["trigger", "delete", "cheap-report"]);
    let (_, list) = c.agents[0].get_any("/v1/triggers").unwrap();
    assert_eq!(list, json!([]));

    // A dependency cycle is refused, naming the edge that closes it.
    let action = json!({"task": {"runtime": "process", "command": "/bin/true"}});
    let extract = json!({"name": "extract", "after": [{"job": "load"}], "run": action});
    let (status, body) = c.agents[0].post("/v1/triggers", &extract).unwrap();
    assert_eq!(status, 201, "{body}");
    let load = json!({"name": "load", "after": [{"job": "extract"}], "run": action});
    let (status, err) = c.agents[0].post("/v1/triggers", &load).unwrap();
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "after[0].job", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("load -> extract -> load")),
        "{err}"
    );
    let (_, list) = c.agents[0].get_any("/v1/triggers").unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["extract"], "nothing written for load");
}

/// Seconds since the epoch of a slot id `NAME@YYYY-MM-DDTHH:MM:SS` (UTC
/// for `every` triggers).
fn slot_secs(id: &str) -> u64 {
    let (_, at) = id.split_once('@').expect("a slot id");
    humantime::parse_rfc3339_weak(at)
        .unwrap_or_else(|e| panic!("{id}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

#[test]
fn killing_the_evaluator_moves_the_trigger_and_no_slot_is_dropped_or_fired_twice() {
    let m = marker("trigkill");
    let _cleanup = KillMarked(m.clone());
    let mut c = Cluster::of("k", 3, &["--cpus", "2", "--memory-mb", "1024"]);
    let trigger = json!({
        "name": "tick",
        "every": "2s",
        "starting_deadline": "1m",
        "run": {
            "type": "batch",
            "count": 1,
            "task": {
                "runtime": "process",
                "command": "/bin/true",
                "env": {"SHOAL_TEST_MARKER": m},
                "resources": {"cpus": 0.1, "memory_mb": 16}
            }
        }
    });
    let (status, body) = c.agents[0].post("/v1/triggers", &trigger).unwrap();
    assert_eq!(status, 201, "{body}");
    let mut owner = String::new();
    wait_until("three runs of tick", SETTLE, || {
        let (_, t) = c.agents[0].get_any("/v1/triggers/tick")?;
        owner = t["evaluated_by"].as_str().unwrap_or_default().to_owned();
        Ok(runs(&c, 0, "tick").len() >= 3 && !owner.is_empty())
    });
    let victim = c
        .agents
        .iter()
        .position(|a| a.info.node_id == owner)
        .unwrap_or_else(|| panic!("no agent is {owner}"));
    c.agents[victim].kill9();
    let survivor = (victim + 1) % 3;
    let before = runs(&c, survivor, "tick").len();
    wait_until(
        "another node evaluates tick, and runs go on",
        SETTLE,
        || {
            let (_, t) = c.agents[survivor].get_any("/v1/triggers/tick")?;
            let by = t["evaluated_by"].as_str().unwrap_or_default();
            Ok(by != owner && !by.is_empty() && runs(&c, survivor, "tick").len() >= before + 3)
        },
    );
    let (_, t) = c.agents[survivor].get_any("/v1/triggers/tick").unwrap();
    // Every slot from the first recorded to the last is accounted for
    // exactly once: fired, skipped or missed (several at once with a
    // count), none twice, none dropped.
    let mut outcomes: Vec<(u64, u64, String)> = t["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let first = slot_secs(o["slot"].as_str().unwrap());
            let last = o["last_slot"].as_str().map_or(first, slot_secs);
            (
                first,
                last,
                o["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    outcomes.sort();
    for pair in outcomes.windows(2) {
        assert_eq!(pair[0].1 + 2, pair[1].0, "a gap or an overlap: {t}");
    }
    // Each run is one job, fired once in the ledger.
    let all = runs(&c, survivor, "tick");
    let mut ids: Vec<&str> = all.iter().filter_map(|r| r["id"].as_str()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a run twice: {all:?}");
    let fired = outcomes.iter().filter(|o| o.2 == "fired").count();
    assert!(fired >= 5, "{t}");
    c.agents[survivor].delete("/v1/triggers/tick").unwrap();
}
