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

/// The node that last evaluated trigger `name`, as agent `via` reads it.
fn evaluator(c: &Cluster, via: usize, name: &str) -> String {
    match c.agents[via].get_any(&format!("/v1/triggers/{name}")) {
        Ok((200, t)) => t["evaluated_by"].as_str().unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

#[test]
fn killing_the_evaluator_during_and_between_slots_drops_no_slot_and_fires_none_twice() {
    let m = marker("trigkill");
    let _cleanup = KillMarked(m.clone());
    let mut c = Cluster::of("k", 5, &["--cpus", "2", "--memory-mb", "1024"]);
    // Each run sleeps 2 s of its 3 s slot: a kill can land in a run.
    let trigger = json!({
        "name": "tick",
        "every": "3s",
        "starting_deadline": "1m",
        "history": {"success": 100, "failed": 100},
        "run": {
            "type": "batch",
            "count": 1,
            "task": {
                "runtime": "process",
                "command": "/bin/sleep",
                "args": ["2"],
                "env": {"SHOAL_TEST_MARKER": m},
                "resources": {"cpus": 0.1, "memory_mb": 16}
            }
        }
    });
    let (status, body) = c.agents[0].post("/v1/triggers", &trigger).unwrap();
    assert_eq!(status, 201, "{body}");
    let mut alive: Vec<usize> = (0..5).collect();
    let mut owners = Vec::new();
    // First kill: while a run is running (during a slot); second: when
    // the last run is complete and the next slot not fired yet (between
    // slots).
    for during in [true, false] {
        let via = alive[0];
        let seen = runs(&c, via, "tick").len();
        let mut owner = String::new();
        wait_until(
            if during {
                "two more runs, the last one running"
            } else {
                "two more runs, the last one complete"
            },
            SETTLE,
            || {
                let all = runs(&c, via, "tick");
                owner = evaluator(&c, via, "tick");
                let want = if during { "running" } else { "complete" };
                let last_ok = all.last().is_some_and(|r| r["status"] == want)
                    && all.iter().filter(|r| r["status"] == "running").count()
                        == usize::from(during);
                Ok(all.len() >= seen + 2
                    && last_ok
                    && !owner.is_empty()
                    && !owners.contains(&owner))
            },
        );
        let victim = c
            .agents
            .iter()
            .position(|a| a.info.node_id == owner)
            .unwrap_or_else(|| panic!("no agent is {owner}"));
        c.agents[victim].kill9();
        alive.retain(|i| *i != victim);
        owners.push(owner);
        let via = alive[0];
        let before = runs(&c, via, "tick").len();
        wait_until(
            "another node evaluates tick, and runs go on",
            SETTLE,
            || {
                let by = evaluator(&c, via, "tick");
                Ok(!by.is_empty()
                    && !owners.contains(&by)
                    && runs(&c, via, "tick").len() >= before + 2)
            },
        );
    }
    let via = alive[0];
    let span = |t: &Value| -> u64 {
        let slots: Vec<u64> = t["recent"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|o| o["slot"].as_str().map(slot_secs))
                    .collect()
            })
            .unwrap_or_default();
        match (slots.iter().min(), slots.iter().max()) {
            (Some(a), Some(b)) => (b - a) / 3 + 1,
            _ => 0,
        }
    };
    wait_until("10 slots accounted for", SETTLE, || {
        let (_, t) = c.agents[via].get_any("/v1/triggers/tick")?;
        Ok(span(&t) >= 10)
    });
    let (_, t) = c.agents[via].get_any("/v1/triggers/tick").unwrap();
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
        assert_eq!(pair[0].1 + 3, pair[1].0, "a gap or an overlap: {t}");
    }
    assert!(span(&t) >= 10, "fewer than 10 slots: {t}");
    for o in &outcomes {
        assert!(
            ["fired", "skipped", "missed"].contains(&o.2.as_str()),
            "an outcome without a kind: {t}"
        );
    }
    // Each run is one job, fired once in the ledger.
    let all = runs(&c, via, "tick");
    let mut ids: Vec<&str> = all.iter().filter_map(|r| r["id"].as_str()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a run twice: {all:?}");
    let fired = outcomes.iter().filter(|o| o.2 == "fired").count();
    assert!(fired >= 6, "{t}");
    c.agents[via].delete("/v1/triggers/tick").unwrap();
}

/// The runs of `trigger` whose status is `status`.
fn runs_with(c: &Cluster, trigger: &str, status: &str) -> Vec<Value> {
    runs(c, 0, trigger)
        .into_iter()
        .filter(|r| r["status"] == status)
        .collect()
}

#[test]
fn load_runs_after_extract_succeeds_and_not_after_it_fails() {
    let m = marker("trigdag");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of("d", 1, &["--cpus", "2", "--memory-mb", "1024"]);
    let a = &c.agents[0];
    // extract succeeds while the flag file exists, and fails (no restart)
    // once it is gone.
    let flag = c.root.path().join("extract-ok");
    std::fs::write(&flag, "").unwrap();
    let task = |script: String| {
        json!({
            "runtime": "process",
            "command": "/bin/sh",
            "args": ["-c", script],
            "env": {"SHOAL_TEST_MARKER": m},
            "resources": {"cpus": 0.1, "memory_mb": 16}
        })
    };
    let extract = json!({
        "name": "extract",
        // Paused, with a schedule far off: it runs only when asked.
        "every": "24h",
        "enabled": false,
        "run": {"count": 1, "restart": {"attempts": 0}, "task": task(format!("test -e {}", flag.display()))}
    });
    let load = json!({
        "name": "load",
        "after": [{"job": "extract", "on": "success"}],
        "run": {"count": 1, "task": task("echo loading after $SHOAL_RUN_ID".into())}
    });
    let cleanup = json!({
        "name": "cleanup",
        "after": [{"job": "extract", "on": "failure"}],
        "run": {"count": 1, "task": task("true".into())}
    });
    for t in [&extract, &load, &cleanup] {
        let (status, body) = a.post("/v1/triggers", t).unwrap();
        assert_eq!(status, 201, "{body}");
    }

    // A run of extract that succeeds starts load, once, naming its parent.
    let (status, run) = a.post("/v1/triggers/extract/run", &json!(null)).unwrap();
    assert_eq!(status, 201, "{run}");
    let first = run["id"].as_str().unwrap().to_owned();
    wait_until("load complete after extract", SETTLE, || {
        Ok(runs_with(&c, "load", "complete").len() == 1)
    });
    let l = &runs(&c, 0, "load")[0];
    assert_eq!(l["id"], format!("load@{first}"), "{l}");
    assert_eq!(l["parent"], first.as_str(), "{l}");
    assert_eq!(runs_with(&c, "extract", "complete").len(), 1);

    // One that fails starts cleanup, and not load.
    std::fs::remove_file(&flag).unwrap();
    let (status, run) = a.post("/v1/triggers/extract/run", &json!(null)).unwrap();
    assert_eq!(status, 201, "{run}");
    let second = run["id"].as_str().unwrap().to_owned();
    wait_until("cleanup complete after extract failed", SETTLE, || {
        Ok(runs_with(&c, "cleanup", "complete").len() == 1)
    });
    assert_eq!(runs(&c, 0, "cleanup")[0]["parent"], second.as_str());
    assert_eq!(runs_with(&c, "extract", "failed").len(), 1);
    // load's evaluator has seen the failure (cleanup's has), and still
    // has one run only.
    let (_, t) = a.get_any("/v1/triggers/load").unwrap();
    assert_eq!(
        runs(&c, 0, "load").len(),
        1,
        "load ran after a failure: {t}"
    );

    // A plain batch job is a parent too: its run is `<job>@v<version>`;
    // and `run_job` runs a named batch job once more, as a run of its own.
    let (status, body) = a
        .post(
            "/v1/triggers",
            &json!({"name": "report", "after": [{"job": "prep"}], "run_job": "prep"}),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let prep = json!({"name": "prep", "type": "batch", "count": 1, "task": task("true".into())});
    let (status, body) = a.post("/v1/jobs", &prep).unwrap();
    assert!(status < 300, "{body}");
    wait_until("report's run of prep complete", SETTLE, || {
        Ok(runs_with(&c, "report", "complete").len() == 1)
    });
    let r = &runs(&c, 0, "report")[0];
    assert_eq!(r["id"], "report@prep@v1", "{r}");
    let (_, job) = a
        .get_any(&format!(
            "/v1/jobs/{}",
            r["job"].as_str().unwrap().replace('/', "%2F")
        ))
        .unwrap();
    assert_eq!(job["spec"]["task"]["args"], prep["task"]["args"], "{job}");

    // A job whose `after` would close a cycle through the triggers is
    // refused, naming the entry; nothing is written.
    let (status, body) = a
        .post(
            "/v1/triggers",
            &json!({"name": "stage", "after": [{"job": "finish"}], "run_job": "prep"}),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let finish =
        json!({"name": "finish", "type": "batch", "after": ["stage"], "task": task("true".into())});
    let (status, err) = a.post("/v1/jobs", &finish).unwrap();
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "after[0]", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("finish -> stage -> finish")),
        "{err}"
    );
    let (status, _) = a.get_any("/v1/jobs/finish").unwrap();
    assert_eq!(status, 404, "nothing written");
    // The cluster's own metrics: a task that fits no node is pending, and
    // a condition on `tasks_pending` sees it, from its coordinator.
    let big = json!({"name": "too-big", "count": 1, "task": {"command": "/bin/sleep", "args": ["600"], "env": {"SHOAL_TEST_MARKER": m}, "resources": {"cpus": 64}}});
    let (status, body) = a.post("/v1/jobs", &big).unwrap();
    assert!(status < 300, "{body}");
    let watch = json!({
        "name": "watch",
        "cooldown": "1h",
        "when": [
            {"signal": "tasks_pending", "op": ">=", "value": 1},
            {"signal": "tasks_running", "op": ">=", "value": 0}
        ],
        "run_job": "prep"
    });
    let (status, body) = a.post("/v1/triggers", &watch).unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("watch fired on a pending task", SETTLE, || {
        Ok(!runs(&c, 0, "watch").is_empty())
    });
    let (_, e) = a.get_any("/v1/triggers/watch/explain").unwrap();
    let pending = &e["conditions"][0];
    assert!(pending["value"].as_f64().is_some_and(|v| v >= 1.0), "{e}");
    assert!(
        pending["source"]
            .as_str()
            .is_some_and(|s| s.contains("coordinators")),
        "{e}"
    );
    a.delete("/v1/jobs/too-big").unwrap();

    // Finished runs beyond `history` are deleted, oldest first.
    let often = json!({
        "name": "often",
        "every": "1s",
        "history": {"success": 2, "failed": 0},
        "run": {"count": 1, "task": task("true".into())}
    });
    let (status, body) = a.post("/v1/triggers", &often).unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("5 runs of often succeeded", SETTLE, || {
        let (_, t) = a.get_any("/v1/triggers/often")?;
        let ok = t["recent"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|o| o["result"] == "success").count());
        Ok(ok >= 5)
    });
    wait_until("2 complete runs of often kept", SETTLE, || {
        Ok(runs_with(&c, "often", "complete").len() == 2)
    });
    a.delete("/v1/triggers/often").unwrap();
    for t in ["extract", "load", "cleanup", "report", "stage", "watch"] {
        a.delete(&format!("/v1/triggers/{t}")).unwrap();
    }
}
