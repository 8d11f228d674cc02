//! The web UI in a real browser (headless chromium through chromedriver)
//! against real agents. Skips, saying why, without chromium and
//! chromedriver (`.ci/run` installs them). Screenshots of every view, light
//! and dark, land in `target/ui-screenshots/`.

use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::browser::Browser;
use shoal_tests::{Cluster, run_shoal, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn browser() -> Option<Browser> {
    Browser::start().expect("starting chromium under chromedriver")
}

/// Opens the UI of `url` logged in with `token` (`#token=` is dropped
/// from the address bar) and waits for the header to name the node.
fn open(b: &Browser, url: &str, token: &str, node: &str) {
    b.goto(&format!("{url}/ui/#token={token}")).unwrap();
    b.wait_text("#served", &format!("served by {node}"), WAIT)
        .unwrap();
    let hash = b.eval("return location.hash;", vec![]).unwrap();
    assert_eq!(hash, json!("#/"), "the token stays out of the address bar");
}

/// Both themes of what is on screen.
fn shots(b: &Browser, name: &str) {
    for theme in ["light", "dark"] {
        b.eval(
            "document.documentElement.dataset.theme = arguments[0]; return true;",
            vec![json!(theme)],
        )
        .unwrap();
        b.screenshot(&format!("{name}-{theme}")).unwrap();
    }
}

fn no_console_errors(b: &mut Browser) {
    let errors = b.console_errors().unwrap();
    assert!(
        errors.is_empty(),
        "JavaScript errors in the console: {errors:#?}"
    );
}

/// The pool's totals as the overview shows them: resource -> total.
fn overview_totals(b: &Browser) -> Value {
    b.eval(
        "const out = {}; for (const e of document.querySelectorAll('#pool .barbox')) out[e.dataset.resource] = Number(e.dataset.total); \
         out.nodes = document.querySelector('#pool h2').innerText; out.states = document.querySelector('#states .counts').innerText; return out;",
        vec![],
    )
    .unwrap()
}

/// The state cell of node `name`'s row in the nodes view.
fn node_row_state(b: &Browser, name: &str) -> String {
    b.eval(
        "for (const tr of document.querySelectorAll('main table tbody tr')) { if (tr.cells[0] && tr.cells[0].innerText.trim() === arguments[0]) return tr.cells[2].innerText; } return '';",
        vec![json!(name)],
    )
    .unwrap()
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

#[test]
fn the_overview_is_the_api_s_pool_on_every_node_and_follows_changes_without_a_reload() {
    let Some(mut b) = browser() else { return };
    let places = [
        ("n0", "east", "z1"),
        ("n1", "east", "z2"),
        ("n2", "west", "w1"),
    ];
    let mut c = Cluster::placed(&places);
    let token = c.token();

    // The overview's totals are the sums of /v1/nodes, on every node.
    let nodes = c.agents[0].nodes().unwrap();
    let sum = |f: &dyn Fn(&shoal_node::api::types::CapacityView) -> f64| -> f64 {
        nodes
            .iter()
            .filter_map(|n| n.capacity.as_ref())
            .map(f)
            .sum()
    };
    let cpus = sum(&|c| c.cpus);
    let memory = sum(&|c| c.memory_mb as f64);
    let disk = sum(&|c| c.disk_mb as f64);
    let mut seen = Vec::new();
    for (i, (name, _, _)) in places.iter().enumerate() {
        open(&b, &c.agents[i].url(), &token, name);
        b.wait_text("#pool h2", "3 live nodes", WAIT).unwrap();
        b.wait_text("#states", "alive", WAIT).unwrap();
        let t = overview_totals(&b);
        assert!(
            (t["CPUs"].as_f64().unwrap() - cpus).abs() < 0.01,
            "{name}: CPUs {t} against {cpus}"
        );
        assert_eq!(t["Memory"].as_f64().unwrap(), memory, "{name}: memory {t}");
        assert_eq!(t["Disk"].as_f64().unwrap(), disk, "{name}: disk {t}");
        b.wait_text("main", "east", WAIT).unwrap();
        b.wait_text("main", "west", WAIT).unwrap();
        // Measured usage, summed by each zone's aggregator, from all 3.
        b.wait_text("#used-nodes", "measured on 3 of 3 nodes", WAIT)
            .unwrap();
        if i == 0 {
            shots(&b, "overview");
        }
        seen.push(t);
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every node serves the same pool: {seen:#?}"
    );

    // A page left holds no connection: reloaded more times than the
    // browser allows connections to one host (6), each load still draws
    // (a stream kept open by a left page once stalled the fifth for a
    // minute).
    let url2 = c.agents[2].url();
    for _ in 0..8 {
        b.goto("about:blank").unwrap();
        b.goto(&format!("{url2}/ui/#/")).unwrap();
        b.wait_text("#pool h2", "3 live nodes", WAIT).unwrap();
    }

    // A job scaled through another node's API: the open page follows,
    // without a reload (what was set in `window` is still there).
    let (status, _) = c.agents[0]
        .post(
            "/v1/jobs",
            &json!({"name": "web", "count": 1, "task": {"command": "/bin/sleep", "args": ["600"], "resources": {"cpus": 0.1, "memory_mb": 16}}}),
        )
        .unwrap();
    assert!(status < 300);
    b.goto(&format!("{}/ui/#/jobs/web", c.agents[0].url()))
        .unwrap();
    b.wait_text("#tasks-h", "Tasks (1)", WAIT).unwrap();
    b.eval("window.__kept = 'still here'; return true;", vec![])
        .unwrap();
    let (status, body) = c.agents[1]
        .post("/v1/jobs/web/scale", &json!({"count": 3}))
        .unwrap();
    assert!(status < 300, "{body}");
    b.wait_text("#tasks-h", "Tasks (3)", WAIT).unwrap();
    shots(&b, "job");
    b.eval("location.hash = '#/jobs'; return true;", vec![])
        .unwrap();
    b.wait_text(".pager", "1–1 of 1", WAIT).unwrap();
    b.wait_text("main", "web", WAIT).unwrap();
    shots(&b, "jobs");

    // Killing an agent turns it suspect, then failed, on the open page.
    b.eval("location.hash = '#/nodes'; return true;", vec![])
        .unwrap();
    wait_until("n2 alive on the nodes page", WAIT, || {
        Ok(node_row_state(&b, "n2").contains("alive"))
    });
    shots(&b, "nodes");
    c.agents[2].kill9();
    wait_until(
        "n2 suspect or failed on the nodes page",
        Duration::from_secs(60),
        || {
            let s = node_row_state(&b, "n2");
            Ok(s.contains("suspect") || s.contains("failed"))
        },
    );
    assert_eq!(
        b.eval("return window.__kept;", vec![]).unwrap(),
        json!("still here"),
        "the page was reloaded"
    );
    // A node's page lists its tasks: the page of a live node that runs one
    // of web's tasks (placement does not promise n0 one of them).
    let mut host = String::new();
    wait_until("a web task running on n0 or n1", WAIT, || {
        host = c
            .tasks(0, "web")
            .iter()
            .filter(|t| t["state"] == "running")
            .filter_map(|t| t["node_name"].as_str())
            .find(|n| *n == "n0" || *n == "n1")
            .unwrap_or_default()
            .to_owned();
        Ok(!host.is_empty())
    });
    b.eval(
        "location.hash = '#/nodes/' + arguments[0]; return true;",
        vec![json!(host)],
    )
    .unwrap();
    b.wait_text("#tasks-h", "Tasks on this node", WAIT).unwrap();
    b.wait_text("main", "web/", WAIT).unwrap();
    shots(&b, "node");
    no_console_errors(&mut b);
}

#[test]
fn the_library_installs_by_drag_and_by_keyboard_and_errors_match_the_cli() {
    let Some(mut b) = browser() else { return };
    let mut c = Cluster::new();
    c.found("n0");
    let a = &c.agents[0];
    let token = c.token();
    open(&b, &a.url(), &token, "n0");
    let env = [("SHOAL_ADDR", a.url()), ("SHOAL_TOKEN", token.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Drag the redis tile onto the panel: the install command, its plan;
    // Enter installs it.
    b.eval("location.hash = '#/library'; return true;", vec![])
        .unwrap();
    b.wait_text("[data-package=redis]", "redis", WAIT).unwrap();
    shots(&b, "library");
    b.drag("[data-package=redis] h3", "#panel").unwrap();
    b.wait_js(
        "the dropped tile's command in the panel",
        "return document.querySelector('#cmd').value === 'package install redis --instance redis';",
        WAIT,
    )
    .unwrap();
    b.wait_text("#panel-plan", "Enter creates installation redis", WAIT)
        .unwrap();
    b.wait_text("#panel-plan", "job redis/primary", WAIT)
        .unwrap();
    b.type_into("#cmd", " --set replicas=2\u{E007}").unwrap();
    b.wait_text("#panel-out", "installed redis", WAIT).unwrap();
    let (status, inst) = a.get_any("/v1/installations/redis").unwrap();
    assert_eq!(status, 200, "{inst}");
    assert_eq!(inst["options"]["replicas"], json!(2), "{inst}");

    // The same with the keyboard only: the tile's button, then typing.
    b.wait_text("#inst-h", "Installations", WAIT).unwrap();
    b.wait_js(
        "the library knows redis is installed",
        "return document.querySelector('#view').innerText.includes('redis@');",
        WAIT,
    )
    .unwrap();
    b.type_into("[data-install=redis]", "\u{E007}").unwrap();
    b.wait_js(
        "the button's command in the panel, focused",
        "return document.activeElement.id === 'cmd' && document.querySelector('#cmd').value === 'package install redis --instance redis-2';",
        WAIT,
    )
    .unwrap();
    b.keys(" --set replicas=1\u{E007}").unwrap();
    b.wait_text("#panel-out", "installed redis-2", WAIT)
        .unwrap();
    let (_, inst) = a.get_any("/v1/installations/redis-2").unwrap();
    assert_eq!(inst["options"]["replicas"], json!(1), "{inst}");

    // The pool, per datacenter, with whether this node reaches it.
    b.type_into("#cmd", "status\u{E007}").unwrap();
    b.wait_text("#panel-out", "FROM HERE", WAIT).unwrap();

    // A mistyped command: the CLI's error, nothing run.
    b.type_into("#cmd", "scael web 3\u{E007}").unwrap();
    let out = b
        .wait_text("#panel-out", "unrecognized subcommand", WAIT)
        .unwrap();
    let (_, _, cli) = run_shoal(&["scael", "web", "3"], &env);
    for line in cli.lines().take(3).filter(|l| !l.is_empty()) {
        assert!(
            out.contains(line.trim()),
            "the panel says\n{out}\nthe CLI says\n{cli}"
        );
    }

    // Options that fail the schema, in the panel and in the form: the
    // CLI's message, next to the field at fault; nothing is created.
    let (_, _, cli) = run_shoal(
        &[
            "package",
            "install",
            "redis",
            "--instance",
            "bad",
            "--set",
            "replicas=-1",
        ],
        &env,
    );
    let cli_error = cli
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("the CLI refuses replicas=-1: {cli}"))
        .to_owned();
    b.type_into(
        "#cmd",
        "package install redis --instance bad --set replicas=-1\u{E007}",
    )
    .unwrap();
    let out = b.wait_text("#panel-out", "is refused", WAIT).unwrap();
    assert!(
        out.contains(&cli_error),
        "the panel says\n{out}\nthe CLI says {cli_error}"
    );
    b.eval("location.hash = '#/library/redis'; return true;", vec![])
        .unwrap();
    b.wait_text("#install-h", "Install", WAIT).unwrap();
    b.eval(
        "const i = document.querySelector('#instance'); i.value = 'bad2'; const r = document.querySelector('#opt-replicas'); r.value = '-1'; r.dispatchEvent(new Event('change')); return true;",
        vec![],
    )
    .unwrap();
    b.click("form button[type=submit]").unwrap();
    let next_to = b.wait_text("#opt-replicas-err", "error:", WAIT).unwrap();
    assert_eq!(
        next_to.trim(),
        cli_error,
        "the form's error next to replicas"
    );
    // The raw JSON editor and the form are one: options typed as JSON
    // show in the form's fields.
    b.eval(
        "const r = document.querySelector('#raw-options'); r.value = '{\"replicas\": 3}'; r.dispatchEvent(new Event('input')); return true;",
        vec![],
    )
    .unwrap();
    b.wait_js(
        "the form shows the replicas typed as JSON",
        "return document.querySelector('#opt-replicas').value === '3';",
        WAIT,
    )
    .unwrap();
    shots(&b, "package");
    for name in ["bad", "bad2"] {
        let (status, _) = a.get_any(&format!("/v1/installations/{name}")).unwrap();
        assert_eq!(status, 404, "installation {name} was not created");
    }
    let jobs: Vec<Value> = a.get("/v1/jobs").unwrap();
    assert!(
        jobs.iter()
            .all(|j| !j["name"].as_str().unwrap_or_default().starts_with("bad")),
        "no job of a refused install: {jobs:?}"
    );

    // Pending tasks say why.
    let (status, _) = a
        .post(
            "/v1/jobs",
            &json!({"name": "huge", "task": {"command": "/bin/sleep", "args": ["600"], "resources": {"cpus": 512}}}),
        )
        .unwrap();
    assert!(status < 300);
    b.eval("location.hash = '#/jobs/huge'; return true;", vec![])
        .unwrap();
    b.wait_text("main", "Why pending tasks wait", WAIT).unwrap();
    b.wait_text("main", "needs 512 cpus", WAIT).unwrap();

    // Logs stream while the page is open.
    let (status, _) = a
        .post(
            "/v1/jobs",
            &json!({"name": "talker", "task": {"command": "/bin/sh", "args": ["-c", "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.2; done"], "resources": {"cpus": 0.1, "memory_mb": 16}}}),
        )
        .unwrap();
    assert!(status < 300);
    b.eval("location.hash = '#/jobs/talker'; return true;", vec![])
        .unwrap();
    b.wait_text("pre.log", "line-2\n", WAIT).unwrap();
    b.wait_text("pre.log", "line-20\n", WAIT).unwrap();
    shots(&b, "logs");
    // Stop the talker: its CPU is wanted by the trigger's runs below.
    let (status, _) = a.delete("/v1/jobs/talker").unwrap();
    assert!(status < 300);

    // Triggers: the list, and one trigger's "why": its condition's value
    // and source, the slots it fired and the runs they started.
    let (status, body) = a
        .post(
            "/v1/triggers",
            &json!({"name": "tick", "every": "2s", "starting_deadline": "1m",
                    "when": [{"signal": "nodes_alive", "op": ">", "value": 0}],
                    "run": {"type": "batch", "task": {"command": "/bin/true", "resources": {"cpus": 0.1, "memory_mb": 16}}}}),
        )
        .unwrap();
    assert!(status < 300, "trigger create: {status} {body}");
    b.eval("location.hash = '#/triggers'; return true;", vec![])
        .unwrap();
    b.wait_text("main", "every 2s", WAIT).unwrap();
    b.wait_text("main", "fired", WAIT).unwrap();
    shots(&b, "triggers");
    b.eval("location.hash = '#/triggers/tick'; return true;", vec![])
        .unwrap();
    b.wait_text("main", "Why it fires, or not", WAIT).unwrap();
    b.wait_text("main", "members alive", WAIT).unwrap();
    b.wait_text("main", "tick@", WAIT).unwrap();
    b.wait_text("main", "complete", WAIT).unwrap();
    shots(&b, "trigger");
    let (status, _) = a.post("/v1/triggers/tick/pause", &json!({})).unwrap();
    assert!(status < 300);
    b.wait_text("main", "paused", WAIT).unwrap();
    let (status, _) = a.delete("/v1/triggers/tick").unwrap();
    assert!(status < 300);
    no_console_errors(&mut b);
}
