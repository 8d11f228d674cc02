//! Jobs run: placement, the process runtime and failures, with real agents.
//!
//! Every task is a process whose environment carries a marker unique to the
//! test (`SHOAL_TEST_MARKER`), so the tests count the real processes of a
//! job on the machine, by `SHOAL_TASK_INDEX`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{
    Cluster, KillMarked, Spec, exactly_once, marker, processes, run_shoal, wait_until,
};

const SETTLE: Duration = Duration::from_secs(60);

/// A job whose tasks print a line and sleep, marked with `marker`.
fn sleeper(name: &str, count: u32, cpus: f64, marker: &str, extra: Value) -> Value {
    let mut v = json!({
        "name": name,
        "count": count,
        "task": {
            "runtime": "process",
            "command": "/bin/sh",
            "args": ["-c", "echo started $SHOAL_TASK_ID on $SHOAL_NODE; exec sleep 3600"],
            "env": {"SHOAL_TEST_MARKER": marker},
            "resources": {"cpus": cpus, "memory_mb": 64}
        },
        "restart": {"mode": "always", "delay": "200ms"}
    });
    if let Value::Object(m) = extra {
        for (k, val) in m {
            v[k] = val;
        }
    }
    v
}

fn cluster(n: usize) -> Cluster {
    Cluster::of(
        "n",
        n,
        &[
            "--fault-injection",
            "--cpus",
            "2",
            "--memory-mb",
            "1024",
            "--stop-grace",
            "2s",
        ],
    )
}

#[test]
fn sixteen_tasks_on_five_nodes_then_twenty_then_one_pending_with_every_reason() {
    let m = marker("fill");
    let _cleanup = KillMarked(m.clone());
    let c = cluster(5);
    let (status, body) = c.agents[0]
        .post("/v1/jobs", &sleeper("fill", 16, 0.5, &m, json!({})))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("16 processes, one per index", SETTLE, || {
        Ok(exactly_once(&m, 16))
    });
    let per_node = |c: &Cluster| {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for t in c.tasks(1, "fill") {
            if t["state"] == "running" {
                *count
                    .entry(t["node"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
        count
    };
    wait_until("16 running in the API", SETTLE, || {
        Ok(per_node(&c).values().sum::<usize>() == 16)
    });
    assert!(per_node(&c).values().all(|n| *n <= 4), "{:?}", per_node(&c));

    assert_eq!(
        c.agents[2]
            .post("/v1/jobs/fill/scale", &json!({"count": 20}))
            .unwrap()
            .0,
        200
    );
    wait_until("20 processes", SETTLE, || Ok(exactly_once(&m, 20)));
    wait_until("4 running on every node", SETTLE, || {
        let p = per_node(&c);
        Ok(p.len() == 5 && p.values().all(|n| *n == 4))
    });

    assert_eq!(
        c.agents[3]
            .post("/v1/jobs/fill/scale", &json!({"count": 21}))
            .unwrap()
            .0,
        200
    );
    let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    wait_until(
        "fill/20 pending with a reason from every node",
        SETTLE,
        || {
            let t = c.tasks(4, "fill");
            let Some(last) = t.iter().find(|t| t["task"] == "fill/20") else {
                return Ok(false);
            };
            let reasons: Vec<String> = last["pending"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Ok(last["state"] == "pending"
                && names.iter().all(|n| {
                    reasons
                        .iter()
                        .any(|r| r.starts_with(&format!("{n}: needs 0.5 cpus")))
                }))
        },
    );
    wait_until("still one process per index", SETTLE, || {
        Ok(exactly_once(&m, 20))
    });
    // The CLI shows it too.
    let env = [
        ("SHOAL_ADDR", c.agents[1].url()),
        ("SHOAL_TOKEN", c.token()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, out, _) = run_shoal(&["ps", "fill"], &env);
    assert!(status.success());
    assert!(
        out.contains("fill/20 is pending") && out.contains("n4: needs 0.5 cpus"),
        "{out}"
    );
    let (status, out, _) = run_shoal(&["ps", "fill", "--json"], &env);
    assert!(status.success());
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    for key in ["task", "job", "index", "node", "state"] {
        assert!(rows[0].get(key).is_some(), "{key} missing: {}", rows[0]);
    }
}

#[test]
fn a_killed_agents_tasks_move_and_its_old_processes_go_when_it_returns() {
    let m = marker("kill");
    let _cleanup = KillMarked(m.clone());
    let mut c = cluster(4);
    assert_eq!(
        c.agents[0]
            .post("/v1/jobs", &sleeper("kill", 8, 0.5, &m, json!({})))
            .unwrap()
            .0,
        201
    );
    wait_until("8 processes", SETTLE, || Ok(exactly_once(&m, 8)));
    // Agent 0 knows where each one runs (its view may trail the processes).
    wait_until("8 tasks running on known nodes", SETTLE, || {
        let t = c.tasks(0, "kill");
        Ok(t.len() == 8
            && t.iter()
                .all(|t| t["state"] == "running" && t["node_name"].as_str().is_some()))
    });
    // The node running the most tasks dies.
    let by_node = {
        let mut b: BTreeMap<String, u32> = BTreeMap::new();
        for t in c.tasks(0, "kill") {
            *b.entry(t["node_name"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        b
    };
    let victim_name = by_node.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    let victim = c.agents.iter().position(|a| a.name == victim_name).unwrap();
    let moved = by_node[&victim_name];
    assert!(moved > 0);
    c.agents[victim].kill9();
    // Its processes outlive it (kill -9 of an agent does not kill tasks), and
    // its tasks run elsewhere too.
    let observer = (victim + 1) % 4;
    wait_until("its tasks running elsewhere", SETTLE, || {
        let t = c.tasks(observer, "kill");
        Ok(t.len() == 8
            && t.iter()
                .all(|t| t["state"] == "running" && t["node_name"] != victim_name.as_str()))
    });
    // When it comes back, none of its old processes remain and no index
    // runs twice.
    let logged_before: Vec<usize> = c.agents.iter().map(|a| a.log().len()).collect();
    c.agents[victim].restart().unwrap();
    wait_until("exactly one process per index", SETTLE, || {
        Ok(exactly_once(&m, 8))
    });
    let log = c.agents[victim].log();
    assert!(
        log.contains("adopting"),
        "the restarted agent did not find its old tasks"
    );
    // Placement messages reach it in its new life at once: the others
    // drop their connections to its dead predecessor (same address), on
    // which every request would wait out its timeout and be lost. (One
    // in flight when the restart is noticed may be lost with the old
    // connection; the placer sends it again.) The first job goes, so
    // that the restarted node has room whatever it kept.
    assert_eq!(c.agents[observer].delete("/v1/jobs/kill").unwrap().0, 200);
    wait_until("the first job's processes gone", SETTLE, || {
        Ok(processes(&m).is_empty())
    });
    let pinned = sleeper(
        "kill-back",
        8,
        0.25,
        &m,
        json!({"constraints": [{"attribute": "name", "op": "=", "value": victim_name}]}),
    );
    assert_eq!(c.agents[observer].post("/v1/jobs", &pinned).unwrap().0, 201);
    wait_until(
        "the pinned tasks running on the restarted node",
        SETTLE,
        || {
            let t = c.tasks(observer, "kill-back");
            Ok(t.len() == 8 && t.iter().all(|t| t["state"] == "running"))
        },
    );
    let id = c.agents[victim].info.node_id.clone();
    for (i, a) in c.agents.iter().enumerate().filter(|(i, _)| *i != victim) {
        let since = a
            .log()
            .get(logged_before[i]..)
            .unwrap_or_default()
            .to_owned();
        let stamp = |line: &str| {
            line.split_whitespace()
                .next()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
        };
        let Some(back) = since
            .lines()
            .find(|l| l.contains(&format!("member alive member={id}")))
            .and_then(stamp)
        else {
            continue;
        };
        // A request times out 5 s after it was sent: one that timed out
        // later than that after the restart was seen went to the new life.
        let late = back + Duration::from_secs(6);
        let timed_out: Vec<&str> = since
            .lines()
            .filter(|l| l.contains(&format!("messages lost to={id}")) && l.contains("no answer"))
            .filter(|l| stamp(l).is_some_and(|t| t > late))
            .collect();
        assert!(
            timed_out.is_empty(),
            "{} waited on a dead connection to the restarted node:\n{}",
            a.name,
            timed_out.join("\n")
        );
    }
}

#[test]
fn after_a_partition_heals_exactly_one_process_per_index() {
    let m = marker("part");
    let _cleanup = KillMarked(m.clone());
    let c = cluster(4);
    assert_eq!(
        c.agents[0]
            .post("/v1/jobs", &sleeper("part", 6, 0.25, &m, json!({})))
            .unwrap()
            .0,
        201
    );
    wait_until("6 processes", SETTLE, || Ok(exactly_once(&m, 6)));
    // The job must be known on both sides before the cut: a side that
    // never heard of it cannot run it (placement is fast enough now to
    // finish before replication reaches every node).
    wait_until("the job on every node", SETTLE, || {
        Ok(c.agents
            .iter()
            .all(|a| a.get_any("/v1/jobs/part").is_ok_and(|(s, _)| s == 200)))
    });
    let ids = |side: &[usize]| {
        side.iter()
            .map(|i| c.agents[*i].info.node_id.clone())
            .collect::<Vec<_>>()
    };
    let (a, b) = ([0usize, 1], [2usize, 3]);
    for i in a {
        c.agents[i].block(&ids(&b)).unwrap();
    }
    for i in b {
        c.agents[i].block(&ids(&a)).unwrap();
    }
    // Each side sees the other fail and runs the tasks it lost.
    wait_until("both sides run every index", SETTLE, || {
        let p = processes(&m);
        Ok(p.len() == 6 && p.values().all(|n| *n == 2))
    });
    for i in 0..4 {
        c.agents[i].block(&[]).unwrap();
    }
    wait_until(
        "exactly one process per index after healing",
        SETTLE,
        || Ok(exactly_once(&m, 6)),
    );
}

#[test]
fn a_node_cut_off_keeps_its_tasks_starts_no_other_and_the_rest_replace_as_each_job_says() {
    let (mv, keep) = (marker("cutmove"), marker("cutkeep"));
    let _cleanup = (KillMarked(mv.clone()), KillMarked(keep.clone()));
    let c = cluster(4);
    // "move" is replaced at once (the default); "keep" only after 10 minutes.
    let jobs = [
        sleeper("move", 8, 0.2, &mv, json!({"spread": "name"})),
        sleeper(
            "keep",
            8,
            0.2,
            &keep,
            json!({"spread": "name", "disconnect": {"replace_after": "10m"}}),
        ),
    ];
    for j in &jobs {
        let (status, body) = c.agents[0].post("/v1/jobs", j).unwrap();
        assert_eq!(status, 201, "{body}");
    }
    wait_until("8 + 8 processes", SETTLE, || {
        Ok(exactly_once(&mv, 8) && exactly_once(&keep, 8))
    });
    wait_until("both jobs on every node", SETTLE, || {
        Ok(c.agents.iter().all(|a| {
            a.get_any("/v1/jobs/keep").is_ok_and(|(s, _)| s == 200)
                && a.get_any("/v1/jobs/move").is_ok_and(|(s, _)| s == 200)
        }))
    });
    // The node cut off: one of 1-3 (0 answers the test's reads) that runs
    // tasks of both jobs (spread over the nodes, most do).
    let on = |node: usize, job: &str| -> Vec<u32> {
        c.tasks(0, job)
            .iter()
            .filter(|t| t["state"] == "running" && t["node_name"] == c.agents[node].name)
            .filter_map(|t| t["index"].as_u64().map(|i| i as u32))
            .collect()
    };
    let cut = (1..4)
        .find(|n| !on(*n, "move").is_empty() && !on(*n, "keep").is_empty())
        .expect("spread over the nodes, both jobs run on one of 1-3");
    let on_cut = |job: &str| on(cut, job);
    let (mv_cut, keep_cut) = (on_cut("move"), on_cut("keep"));
    eprintln!("on n{cut}, cut off: move {mv_cut:?}, keep {keep_cut:?}");

    let ids: Vec<String> = c.agents.iter().map(|a| a.info.node_id.clone()).collect();
    let rest: Vec<usize> = (0..4).filter(|n| *n != cut).collect();
    let others: Vec<String> = rest.iter().map(|n| ids[*n].clone()).collect();
    c.agents[cut].block(&others).unwrap();
    for n in &rest {
        c.agents[*n].block(std::slice::from_ref(&ids[cut])).unwrap();
    }
    c.wait_report_by(&rest, std::slice::from_ref(&ids[cut]), "failed", SETTLE);
    c.wait_report_by(&[cut], &others, "failed", SETTLE);
    // The others replace move's tasks of the node cut off; keep's wait,
    // saying why.
    wait_until("move replaced by the others", SETTLE, || {
        let p = processes(&mv);
        Ok((0..8).all(|i| p.get(&i) == Some(&(1 + usize::from(mv_cut.contains(&i))))))
    });
    wait_until(
        "keep's lost tasks waiting for replace_after",
        SETTLE,
        || {
            Ok(c.tasks(0, "keep")
                .iter()
                .any(|t| t["pending"].to_string().contains("replace_after")))
        },
    );
    // The node cut off says why the others' tasks wait there, and started
    // none of them: keep still has one process per index.
    wait_until("the node cut off says why", SETTLE, || {
        Ok(c.tasks(cut, "keep")
            .iter()
            .any(|t| t["pending"].to_string().contains("fewer than half")))
    });
    assert!(exactly_once(&keep, 8), "{:?}", processes(&keep));
    let p = processes(&mv);
    assert!(
        (0..8).all(|i| p.get(&i) == Some(&(1 + usize::from(mv_cut.contains(&i))))),
        "{p:?}"
    );

    for a in &c.agents {
        a.block(&[]).unwrap();
    }
    wait_until(
        "one process per index of each job after the heal",
        SETTLE,
        || Ok(exactly_once(&mv, 8) && exactly_once(&keep, 8)),
    );
    // keep's tasks never moved: the node that was cut off runs them still
    // (as the API says once the views agree again).
    wait_until("keep's tasks where they were", SETTLE, || {
        let now = on_cut("keep");
        if now.len() >= keep_cut.len() && now != keep_cut {
            panic!("keep's tasks moved: {keep_cut:?} then {now:?}");
        }
        Ok(now == keep_cut)
    });
}

#[test]
fn an_agent_restarted_with_no_peer_reachable_runs_its_own_tasks_again_and_no_other() {
    let m = marker("offline");
    let _cleanup = KillMarked(m.clone());
    let mut c = cluster(3);
    let job = sleeper(
        "edge",
        6,
        0.25,
        &m,
        json!({"spread": "name", "disconnect": {"replace_after": "10m"}}),
    );
    assert_eq!(c.agents[0].post("/v1/jobs", &job).unwrap().0, 201);
    wait_until("6 processes", SETTLE, || Ok(exactly_once(&m, 6)));
    let on = |c: &Cluster, via: usize, node: usize| -> Vec<u32> {
        c.tasks(via, "edge")
            .iter()
            .filter(|t| t["state"] == "running" && t["node_name"] == c.agents[node].name)
            .filter_map(|t| t["index"].as_u64().map(|i| i as u32))
            .collect()
    };
    wait_until("6 running in the API", SETTLE, || {
        Ok((0..3).map(|n| on(&c, 0, n).len()).sum::<usize>() == 6)
    });
    let edge = (0..3)
        .find(|n| !on(&c, 0, *n).is_empty())
        .expect("a node runs tasks");
    let mine = on(&c, 0, edge);
    eprintln!("n{edge} runs {mine:?}");
    // What a restarted node knows of its cluster: the peers it saved.
    wait_until("the edge node saved both peers", SETTLE, || {
        let saved = std::fs::read_to_string(c.agents[edge].dir.join("peers.json"))?;
        Ok(serde_json::from_str::<Vec<String>>(&saved)?.len() == 2)
    });

    // Every agent goes away; the edge node's machine loses power (its
    // tasks die with it); the others' tasks outlive their agents.
    for a in &mut c.agents {
        a.kill9();
    }
    for pid in shoal_tests::processes_naming(&c.agents[edge].dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_until("the edge node's tasks gone", SETTLE, || {
        Ok(processes(&m).len() == 6 - mine.len())
    });
    // It comes back alone: none of the peers it knew answers.
    c.agents[edge].restart().unwrap();
    wait_until("its own tasks running again", SETTLE, || {
        Ok(exactly_once(&m, 6) && on(&c, edge, edge) == mine)
    });
    wait_until(
        "the others' tasks waiting there, saying why",
        SETTLE,
        || {
            Ok(c.tasks(edge, "edge")
                .iter()
                .filter(|t| t["pending"].to_string().contains("fewer than half"))
                .count()
                == 6 - mine.len())
        },
    );
    // It started none of them.
    assert!(exactly_once(&m, 6), "{:?}", processes(&m));

    // The others come back: one process per index, each where it was.
    for n in (0..3).filter(|n| *n != edge) {
        c.agents[n].restart().unwrap();
    }
    c.wait_all_alive(3, SETTLE);
    wait_until("6 running, each where it was", SETTLE, || {
        let (p, now) = (processes(&m), on(&c, 0, edge));
        eprintln!("processes {p:?}; n{edge} runs {now:?}");
        Ok(exactly_once(&m, 6) && now == mine)
    });
    assert!(exactly_once(&m, 6), "{:?}", processes(&m));
}

#[test]
fn scale_down_up_and_stop_leave_no_stray_process() {
    let m = marker("scale");
    let _cleanup = KillMarked(m.clone());
    let c = cluster(5);
    assert_eq!(
        c.agents[0]
            .post("/v1/jobs", &sleeper("scale", 16, 0.5, &m, json!({})))
            .unwrap()
            .0,
        201
    );
    wait_until("16", SETTLE, || Ok(exactly_once(&m, 16)));
    assert_eq!(
        c.agents[1]
            .post("/v1/jobs/scale/scale", &json!({"count": 4}))
            .unwrap()
            .0,
        200
    );
    wait_until("the 4 lowest indexes", SETTLE, || Ok(exactly_once(&m, 4)));
    assert_eq!(
        c.agents[2]
            .post("/v1/jobs/scale/scale", &json!({"count": 10}))
            .unwrap()
            .0,
        200
    );
    wait_until("10", SETTLE, || Ok(exactly_once(&m, 10)));
    assert_eq!(c.agents[3].delete("/v1/jobs/scale").unwrap().0, 200);
    wait_until("no process of the job", SETTLE, || {
        Ok(processes(&m).is_empty())
    });
}

#[test]
fn constraints_system_jobs_and_a_late_joiner() {
    let m = marker("sys");
    let mg = marker("gpu");
    let _cleanup = (KillMarked(m.clone()), KillMarked(mg.clone()));
    let mut c = Cluster::new();
    for i in 0..3 {
        let mut spec = Spec::named(&format!("n{i}"));
        spec.args = vec![
            "--cpus".into(),
            "2".into(),
            "--memory-mb".into(),
            "1024".into(),
        ];
        if i == 1 {
            spec.args.extend(["--label".into(), "gpu=yes".into()]);
        }
        if i > 0 {
            spec.join = vec![c.agents[0].info.gossip];
            spec.token = Some(c.token());
        }
        c.start(&spec);
    }
    c.wait_all_alive(3, SETTLE);
    let gpu = sleeper(
        "train",
        3,
        0.25,
        &mg,
        json!({"constraints": [{"attribute": "gpu", "op": "=", "value": "yes"}]}),
    );
    assert_eq!(c.agents[0].post("/v1/jobs", &gpu).unwrap().0, 201);
    let mut daemon = sleeper("daemon", 1, 0.1, &m, json!({"type": "system"}));
    daemon.as_object_mut().unwrap().remove("count");
    assert_eq!(c.agents[0].post("/v1/jobs", &daemon).unwrap().0, 201);
    wait_until("3 gpu tasks", SETTLE, || Ok(exactly_once(&mg, 3)));
    // n2 learns where they run from the holder's leases, which may still
    // be on their way when the processes are up.
    wait_until("n2 sees the 3 gpu tasks on n1", SETTLE, || {
        let t = c.tasks(2, "train");
        Ok(t.len() == 3 && t.iter().all(|t| t["node_name"] == "n1"))
    });
    // SHOAL_TASK_INDEX is 0 for system tasks: count per node instead.
    wait_until("one system task per node", SETTLE, || {
        let t = c.tasks(0, "daemon");
        Ok(t.len() == 3 && t.iter().all(|t| t["state"] == "running"))
    });
    let mut spec = Spec::named("late");
    spec.join = vec![c.agents[0].info.gossip];
    spec.token = Some(c.token());
    c.start(&spec);
    wait_until("the late joiner runs the system job", SETTLE, || {
        let t = c.tasks(0, "daemon");
        Ok(t.len() == 4
            && t.iter()
                .any(|t| t["node_name"] == "late" && t["state"] == "running"))
    });
    assert_eq!(processes(&m).get(&0).copied(), Some(4));
}

#[test]
fn a_missing_command_fails_clearly_and_logs_are_read_through_any_node() {
    let m = marker("logs");
    let _cleanup = KillMarked(m.clone());
    let c = cluster(3);
    let bad = json!({
        "name": "broken",
        "count": 1,
        "task": {"runtime": "process", "command": "/no/such/program", "resources": {"cpus": 0.1, "memory_mb": 32}},
        "restart": {"mode": "on_failure", "attempts": 2, "delay": "100ms"}
    });
    assert_eq!(c.agents[0].post("/v1/jobs", &bad).unwrap().0, 201);
    wait_until("broken/0 failed after its restarts", SETTLE, || {
        let t = c.tasks(1, "broken");
        Ok(t.len() == 1
            && t[0]["state"] == "failed"
            && t[0]["restarts"] == 2
            && t[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("/no/such/program")))
    });

    let hello = json!({
        "name": "hello",
        "count": 1,
        "task": {"runtime": "process", "command": "/bin/sh",
                                  "args": ["-c", "echo out-$SHOAL_TASK_ID; echo err-$SHOAL_JOB >&2; exec sleep 3600"],
                 "env": {"SHOAL_TEST_MARKER": m},
                 "resources": {"cpus": 0.1, "memory_mb": 32}}
    });
    assert_eq!(c.agents[0].post("/v1/jobs", &hello).unwrap().0, 201);
    wait_until("hello running", SETTLE, || {
        Ok(c.tasks(0, "hello")
            .first()
            .is_some_and(|t| t["state"] == "running"))
    });
    let runner = c.tasks(0, "hello")[0]["node_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = c.agents.iter().position(|a| a.name != runner).unwrap();
    let env = [
        ("SHOAL_ADDR", c.agents[other].url()),
        ("SHOAL_TOKEN", c.token()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    wait_until("stdout through another node", SETTLE, || {
        let (status, out, _) = run_shoal(&["logs", "hello/0"], &env);
        Ok(status.success() && out.contains("out-hello/0"))
    });
    let (status, out, _) = run_shoal(&["logs", "hello/0", "--stderr"], &env);
    assert!(status.success());
    assert!(out.contains("err-hello"), "{out}");
    let _ = run_shoal(&["stop", "hello"], &env);
}

#[test]
fn a_task_over_its_memory_limit_is_killed_for_oom() {
    let c = cluster(1);
    let (_, me) = c.agents[0].get_any("/v1/self").unwrap();
    if me["isolation"] == "none" {
        eprintln!("skipped: this host gives tasks no cgroup limits (isolation: none)");
        return;
    }
    let hog = json!({
        "name": "hog",
        "count": 1,
        "task": {"runtime": "process", "command": "/bin/sh",
                 "args": ["-c", "head -c 400M /dev/zero | tail"],
                 "resources": {"cpus": 0.5, "memory_mb": 32}},
        "restart": {"mode": "never"}
    });
    assert_eq!(c.agents[0].post("/v1/jobs", &hog).unwrap().0, 201);
    wait_until("hog killed for oom", SETTLE, || {
        let t = c.tasks(0, "hog");
        Ok(t.first()
            .is_some_and(|t| t["state"] == "killed" && t["reason"] == "oom"))
    });
}

#[test]
fn a_drained_node_takes_no_task_and_its_tasks_move_away() {
    let m = marker("drain");
    let _cleanup = KillMarked(m.clone());
    let c = cluster(3);
    let env = [
        ("SHOAL_ADDR", c.agents[0].url()),
        ("SHOAL_TOKEN", c.token()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Submit and wait, through the CLI.
    let job = sleeper("drain", 6, 0.25, &m, json!({}));
    let toml_text = toml_of(&job);
    let job_file = c.root.path().join("drain.toml");
    std::fs::write(&job_file, toml_text).unwrap();
    let (status, out, err) = run_shoal(
        &[
            "run",
            job_file.to_str().unwrap(),
            "--wait",
            "--timeout",
            "60s",
        ],
        &env,
    );
    assert!(status.success(), "{out}{err}");
    // Nodes that met a moment ago may both start a task before their views
    // agree; the extra copy is stopped once they do.
    wait_until("one process per index", SETTLE, || Ok(exactly_once(&m, 6)));
    let node = c.tasks(0, "drain")[0]["node_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, out, err) = run_shoal(&["node", "drain", &node], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains("draining"), "{out}");
    wait_until(
        "no task left on the drained node, all running",
        SETTLE,
        || {
            let t = c.tasks(1, "drain");
            Ok(t.len() == 6
                && t.iter()
                    .all(|t| t["state"] == "running" && t["node_name"] != node.as_str()))
        },
    );
    wait_until("one process per index", SETTLE, || Ok(exactly_once(&m, 6)));
    // The flag travels in gossip metadata, which may reach node 0 a moment
    // after the tasks have already moved.
    wait_until("every node sees the node draining", SETTLE, || {
        Ok(c.agents[0].get_any(&format!("/v1/nodes/{node}"))?.1["draining"] == true)
    });
    // It takes tasks again once undrained.
    let (status, _, _) = run_shoal(&["node", "drain", &node, "--undo"], &env);
    assert!(status.success());
    wait_until("the node is no longer draining", SETTLE, || {
        Ok(c.agents[1].get_any(&format!("/v1/nodes/{node}"))?.1["draining"] == false)
    });
}

/// The job file of a JSON spec.
fn toml_of(v: &Value) -> String {
    let value: toml::Value = serde_json::from_value(v.clone()).unwrap();
    toml::to_string(&value).unwrap()
}
