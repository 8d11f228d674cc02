//! `GET /v1/summary`, the filters and paging of `GET /v1/nodes` and
//! `GET /v1/jobs`, and `member.state` in `/v1/events`, with real agents.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_client::Method;
use shoal_tests::{AgentProc, Cluster, Spec, wait_until};

const CONVERGE: Duration = Duration::from_secs(60);

/// `GET path`: status, `X-Total-Count`, JSON body.
fn get(a: &AgentProc, path: &str) -> (u16, Option<u64>, Value) {
    let r = a
        .client()
        .send(Method::Get, path, None::<&()>)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r.status, r.total_count, r.json())
}

/// The ids of a page of nodes.
fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A group of the summary as computed from `/v1/nodes`: members by
/// state, live nodes with metadata, and their capacity.
fn group_of<'a>(nodes: impl Iterator<Item = &'a Value>) -> Value {
    let (mut alive, mut suspect, mut failed, mut left) = (0, 0, 0, 0);
    let (mut live, mut cpus, mut mem, mut disk, mut gpus) = (0, 0.0, 0, 0, 0);
    for n in nodes {
        let state = n["state"].as_str().unwrap_or_default();
        match state {
            "alive" => alive += 1,
            "suspect" => suspect += 1,
            "failed" => failed += 1,
            _ => left += 1,
        }
        if matches!(state, "alive" | "suspect") && !n["capacity"].is_null() {
            live += 1;
            cpus += n["capacity"]["cpus"].as_f64().unwrap_or_default();
            mem += n["capacity"]["memory_mb"].as_u64().unwrap_or_default();
            disk += n["capacity"]["disk_mb"].as_u64().unwrap_or_default();
            gpus += n["capacity"]["gpus"].as_u64().unwrap_or_default();
        }
    }
    json!({
        "members": {"alive": alive, "suspect": suspect, "failed": failed, "left": left},
        "nodes": live,
        "capacity": {"cpus": cpus, "memory_mb": mem, "disk_mb": disk, "gpus": gpus},
    })
}

/// The parts of a summary group [`group_of`] computes.
fn counted(g: &Value) -> Value {
    json!({"members": g["members"], "nodes": g["nodes"], "capacity": g["capacity"]})
}

/// Whether agent `a`'s summary grouped by dc and zone equals the sums
/// over its own `/v1/nodes`.
fn summary_matches_nodes(a: &AgentProc) -> anyhow::Result<bool> {
    let (status, _, nodes) = get(a, "/v1/nodes");
    anyhow::ensure!(status == 200, "GET /v1/nodes: {status} {nodes}");
    let (status, _, s) = get(a, "/v1/summary?group_by=dc,zone");
    anyhow::ensure!(status == 200, "GET /v1/summary: {status} {s}");
    let nodes = nodes.as_array().cloned().unwrap_or_default();
    let mut want = vec![("total".to_owned(), group_of(nodes.iter()))];
    let mut got = vec![("total".to_owned(), counted(&s["total"]))];
    let mut dcs: Vec<String> = nodes
        .iter()
        .filter_map(|n| n["dc"].as_str().map(str::to_owned))
        .collect();
    dcs.sort();
    dcs.dedup();
    let groups = s["groups"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(groups.len() == dcs.len(), "groups {groups:?}, dcs {dcs:?}");
    for (dc, g) in dcs.iter().zip(&groups) {
        anyhow::ensure!(g["dc"] == json!(dc), "group {g} is not dc {dc}");
        let in_dc: Vec<&Value> = nodes.iter().filter(|n| n["dc"] == json!(dc)).collect();
        want.push((dc.clone(), group_of(in_dc.iter().copied())));
        got.push((dc.clone(), counted(g)));
        for z in g["zones"].as_array().cloned().unwrap_or_default() {
            let at = format!("{dc}/{}", z["zone"]);
            want.push((
                at.clone(),
                group_of(in_dc.iter().copied().filter(|n| n["zone"] == z["zone"])),
            ));
            got.push((at, counted(&z)));
        }
    }
    if want != got {
        eprintln!("summary {got:?}\nnodes   {want:?}");
        return Ok(false);
    }
    Ok(true)
}

/// Reads server-sent events from `/v1/events` of one agent.
struct Events {
    lines: BufReader<TcpStream>,
}

impl Events {
    fn open(a: &AgentProc) -> Events {
        let mut s = TcpStream::connect(a.info.api).expect("connecting to the API");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("read timeout");
        write!(
            s,
            "GET /v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
            a.info.api, a.token
        )
        .expect("sending the request");
        Events {
            lines: BufReader::new(s),
        }
    }

    /// Waits for a `member.state` event whose data satisfies `want`.
    fn wait_member(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut event = String::new();
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => panic!("the event stream ended; saw {seen:?}"),
                Ok(_) => {}
                Err(_) => continue,
            }
            let line = line.trim_end();
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:")
                && event == "member.state"
            {
                let v: Value = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
                if want(&v) {
                    return v;
                }
                seen.push(v);
            }
        }
        panic!("no matching member.state event in {timeout:?}; saw {seen:?}");
    }
}

#[test]
fn summary_totals_match_the_nodes_and_lists_page_and_filter() {
    let mut c = Cluster::new();
    c.start(&Spec {
        name: "s0".into(),
        args: ["--dc", "east", "--zone", "e1", "--cpus", "2"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let join = |name: &str, args: &[&str], c: &Cluster| Spec {
        name: name.into(),
        join: vec![c.agents[0].info.gossip],
        token: Some(c.token()),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    let spec = join("s1", &["--dc", "east", "--zone", "e2", "--cpus", "3"], &c);
    c.start(&spec);
    c.wait_all_alive(2, CONVERGE);

    // The third agent joins while s0's event stream is open.
    let mut events = Events::open(&c.agents[0]);
    let spec = join("s2", &["--dc", "west", "--cpus", "1.5"], &c);
    c.start(&spec);
    c.wait_all_alive(3, CONVERGE);
    let s2 = c.agents[2].info.node_id.clone();
    let ev = events.wait_member(CONVERGE, |v| v["id"] == json!(s2) && v["state"] == "alive");
    assert_eq!(ev["node"], json!(c.agents[0].info.node_id), "{ev}");
    assert!(ev["previous"].is_null(), "a member new to s0: {ev}");

    // The summary, on every agent, adds up to its member list.
    for a in &c.agents {
        wait_until(
            &format!("{}'s summary to match its /v1/nodes", a.name),
            CONVERGE,
            || summary_matches_nodes(a),
        );
    }
    let (status, _, s) = get(&c.agents[0], "/v1/summary?group_by=dc,zone");
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["node"]["id"], json!(c.agents[0].info.node_id), "{s}");
    assert_eq!(s["node"]["name"], "s0", "{s}");
    assert_eq!(s["total"]["members"]["alive"], 3, "{s}");
    assert_eq!(s["total"]["capacity"]["cpus"], 6.5, "{s}");
    assert_eq!(s["local"]["capacity"]["cpus"], 2.0, "{s}");
    assert_eq!(s["groups"][0]["dc"], "east", "{s}");
    assert_eq!(
        s["groups"][0]["zones"].as_array().map(Vec::len),
        Some(2),
        "{s}"
    );
    assert!(s["generated_at"].is_string(), "{s}");
    assert!(s["members_changed_at"].is_string(), "{s}");
    // Without group_by, only the total; with dc, no zones.
    let (_, _, s) = get(&c.agents[1], "/v1/summary");
    assert_eq!(s["groups"], json!([]), "{s}");
    assert_eq!(s["total"]["nodes"], 3, "{s}");
    let (_, _, s) = get(&c.agents[1], "/v1/summary?group_by=dc");
    assert_eq!(s["groups"].as_array().map(Vec::len), Some(2), "{s}");
    assert!(s["groups"][0].get("zones").is_none(), "{s}");

    // Paging: the pages put together are the whole list, in its order.
    let a = &c.agents[0];
    let (_, total, all) = get(a, "/v1/nodes");
    assert_eq!(total, Some(3));
    let all = ids(&all);
    let mut paged = Vec::new();
    for offset in [0, 2, 4] {
        let (status, total, page) = get(a, &format!("/v1/nodes?limit=2&offset={offset}"));
        assert_eq!((status, total), (200, Some(3)), "{page}");
        paged.extend(ids(&page));
    }
    assert_eq!(paged, all);
    // Filters.
    for (query, count) in [
        ("dc=east", 2),
        ("dc=east&zone=e2", 1),
        ("dc=west&zone=", 1),
        ("state=alive", 3),
        ("state=failed,left", 0),
        ("q=S2", 1),
        (&*format!("q={}", &s2[..6]), 1),
        ("dc=east&limit=1", 2),
    ] {
        let (status, total, page) = get(a, &format!("/v1/nodes?{query}"));
        assert_eq!((status, total), (200, Some(count)), "{query}: {page}");
        let shown = page.as_array().map(Vec::len).unwrap_or_default() as u64;
        let limit = if query.contains("limit=1") { 1 } else { count };
        assert_eq!(shown, count.min(limit), "{query}: {page}");
    }

    // Jobs (count 0: nothing runs).
    for name in ["web/a", "web/b", "db"] {
        let (status, body) = a
            .post(
                "/v1/jobs",
                &json!({"name": name, "count": 0, "task": {"command": "/bin/true"}}),
            )
            .unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let (_, total, page) = get(a, "/v1/jobs?q=web&limit=1&offset=1");
    assert_eq!(total, Some(2), "{page}");
    assert_eq!(page[0]["name"], "web/b", "{page}");
    let (_, total, _) = get(a, "/v1/jobs?type=service&status=active");
    assert_eq!(total, Some(3));
    let (_, total, _) = get(a, "/v1/jobs?type=batch");
    assert_eq!(total, Some(0));
    let (_, _, s) = get(a, "/v1/summary");
    assert_eq!(s["jobs"]["total"], 3, "{s}");
    assert_eq!(s["jobs"]["by_type"]["service"], 3, "{s}");

    // A bad parameter is a 400 naming it.
    for (path, field) in [
        ("/v1/nodes?limit=abc", "limit"),
        ("/v1/nodes?limit=1001", "limit"),
        ("/v1/nodes?offset=-1", "offset"),
        ("/v1/nodes?state=dead", "state"),
        ("/v1/nodes?sate=alive", "sate"),
        ("/v1/jobs?status=nope", "status"),
        ("/v1/jobs?type=cron", "type"),
        ("/v1/summary?group_by=zone", "group_by"),
    ] {
        let (status, _, body) = get(a, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{path}: {body}");
    }

    // s2 leaves: s0's stream tells of it (from alive, or from failed when
    // the leave record came after the down).
    let status = c.agents[2].terminate().unwrap();
    assert!(status.success(), "s2 exit status {status}");
    events.wait_member(CONVERGE, |v| {
        v["id"] == json!(s2) && v["state"] == "left" && !v["previous"].is_null()
    });
    wait_until("s0's summary to count s2 left", CONVERGE, || {
        let (_, _, s) = get(&c.agents[0], "/v1/summary?group_by=dc");
        Ok(s["total"]["members"]["left"] == 1 && s["total"]["nodes"] == 2)
    });
    assert!(summary_matches_nodes(&c.agents[0]).unwrap());
}

/// The zone `dc`/`zone` of a summary grouped by dc and zone.
fn zone_of(s: &Value, dc: &str, zone: &str) -> Value {
    s["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["dc"] == dc)
        .flat_map(|g| g["zones"].as_array().cloned().unwrap_or_default())
        .find(|z| z["zone"] == zone)
        .unwrap_or(Value::Null)
}

#[test]
fn measured_usage_is_summed_by_each_zone_s_aggregator_and_moves_when_it_dies() {
    let mut c = Cluster::placed(&[
        ("u0", "east", "e1"),
        ("u1", "east", "e1"),
        ("u2", "west", "w1"),
    ]);

    // Every node's summary counts every node's report, zone by zone, and
    // what is used is within what is offered.
    for a in &c.agents {
        wait_until(
            &format!("{}'s summary to hold 3 nodes' usage", a.name),
            CONVERGE,
            || {
                let (status, _, s) = get(a, "/v1/summary?group_by=dc,zone");
                anyhow::ensure!(status == 200, "{s}");
                let (e1, w1) = (zone_of(&s, "east", "e1"), zone_of(&s, "west", "w1"));
                Ok(s["total"]["used_nodes"] == 3
                    && e1["used_nodes"] == 2
                    && w1["used_nodes"] == 1
                    && s["groups"][0]["used_nodes"] == 2)
            },
        );
        let (_, _, s) = get(a, "/v1/summary");
        let (used, cap) = (&s["total"]["used"], &s["total"]["capacity"]);
        assert!(used["memory_mb"].as_u64().unwrap_or(0) > 0, "{s}");
        for r in ["cpus", "memory_mb", "disk_mb", "gpus"] {
            assert!(
                used[r].as_f64().unwrap_or(-1.0) <= cap[r].as_f64().unwrap_or(0.0),
                "{r}: used beyond capacity: {s}"
            );
            assert!(used[r].as_f64().unwrap_or(-1.0) >= 0.0, "{r}: {s}");
        }
    }

    // The aggregator of east/e1 (its alive member with the lowest id)
    // dies: the other member of e1 takes over, and every node counts it
    // again without the dead one.
    let (lo, hi) = if c.agents[0].info.node_id < c.agents[1].info.node_id {
        (0, 1)
    } else {
        (1, 0)
    };
    c.agents[lo].kill9();
    for i in [hi, 2] {
        let a = &c.agents[i];
        wait_until(
            &format!(
                "{}'s summary to count e1's usage without its dead aggregator",
                a.name
            ),
            CONVERGE,
            || {
                let (_, _, s) = get(a, "/v1/summary?group_by=dc,zone");
                let e1 = zone_of(&s, "east", "e1");
                Ok(e1["nodes"] == 1 && e1["used_nodes"] == 1 && s["total"]["used_nodes"] == 2)
            },
        );
    }
}
