//! Artifacts with real agents: a file stored with `shoal artifact put` on
//! one node is copied to others and fetched by a task on another node
//! (checked byte for byte by the task itself); a `.tar.gz` is unpacked into
//! the sandbox, beside a `[[task.files]]` file written there; a digest that does not match is refused, for an upload and
//! for a task's artifact (the task fails naming it); a removed artifact's
//! copies are collected.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, marker, run_shoal, wait_until};

const SETTLE: Duration = Duration::from_secs(90);

fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A file of `n` pseudo-random bytes.
fn random_file(path: &Path, n: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(n);
    fs::File::create(path).unwrap().write_all(&buf).unwrap();
}

fn blob(c: &Cluster, agent: usize, hex: &str) -> std::path::PathBuf {
    c.agents[agent].dir.join("blobs/sha256").join(hex)
}

fn task_reason(c: &Cluster, job: &str) -> String {
    c.tasks(0, job)
        .iter()
        .filter_map(|t| t["reason"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn artifacts_are_shared_checked_unpacked_and_collected() {
    let m = marker("artifacts");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of(
        "a",
        3,
        &[
            "--cpus",
            "2",
            "--memory-mb",
            "1024",
            "--artifact-gc-after",
            "1s",
        ],
    );
    let root = c.root.path().to_owned();
    let data = root.join("data.bin");
    random_file(&data, 3 * 1024 * 1024 + 17, 42);
    let hex = sha256_hex(&data);

    // A digest that does not match: refused, naming what, nothing kept.
    let token = c.token();
    let url = c.agents[0].url();
    let env = [
        ("SHOAL_ADDR", url.as_str()),
        ("SHOAL_TOKEN", token.as_str()),
    ];
    let wrong = "0".repeat(64);
    let (status, out, err) = run_shoal(
        &[
            "artifact",
            "put",
            data.to_str().unwrap(),
            "--sha256",
            &wrong,
        ],
        &env,
    );
    assert!(!status.success(), "{out}{err}");
    assert!(
        err.contains("sha256 mismatch") && err.contains("data.bin") && err.contains(&wrong),
        "{err}"
    );
    assert!(!blob(&c, 0, &hex).exists(), "nothing kept");
    let left: Vec<_> = fs::read_dir(c.agents[0].dir.join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "no partial file left: {left:?}");

    // Stored on a0, copied to the two others.
    let (status, out, err) = run_shoal(
        &[
            "--json",
            "artifact",
            "put",
            data.to_str().unwrap(),
            "--name",
            "data",
        ],
        &env,
    );
    assert!(status.success(), "{out}{err}");
    let put: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(put["sha256"], hex);
    assert_eq!(put["source"], format!("shoal:sha256:{hex}"));
    assert_eq!(put["holders"].as_array().unwrap().len(), 3);
    wait_until("both copies made", SETTLE, || {
        Ok((0..3).all(|i| blob(&c, i, &hex).is_file()))
    });
    let (status, out, _) = run_shoal(
        &["--json", "artifact", "list"],
        &[
            ("SHOAL_ADDR", c.agents[2].url().as_str()),
            ("SHOAL_TOKEN", token.as_str()),
        ],
    );
    assert!(status.success());
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "data");
    assert_eq!(list[0]["local"]["present"], true);

    // A tar.gz on the running node's disk, unpacked into the sandbox.
    let tree = root.join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::write(tree.join("bin/hello.txt"), "hello from the archive\n").unwrap();
    let tgz = root.join("tree.tgz");
    let ok = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    let tgz_hex = sha256_hex(&tgz);

    // A task on another node than a0 reads both.
    let result = root.join("result");
    let job = json!({
        "name": "reader",
        "type": "batch",
        "task": {
            "command": "/bin/sh",
            "args": ["-c", format!(
                "cmp data.bin {} && cat dist/bin/hello.txt conf/app.conf > {}",
                data.display(), result.display()
            )],
            "env": {"SHOAL_TEST_MARKER": m},
            "resources": {"cpus": 0.25, "memory_mb": 32},
            "artifacts": [
                {"source": format!("shoal:sha256:{hex}"), "dest": "data.bin"},
                {"source": format!("file://{}", tgz.display()), "sha256": tgz_hex, "extract": true, "dest": "dist"},
            ],
            "files": [{"path": "conf/app.conf", "content": "port = 1\n"}]
        },
        "constraints": [{"attribute": "name", "op": "!=", "value": "a0"}]
    });
    let (status, body) = c.agents[1].post("/v1/jobs", &job).unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("the task read the artifacts", SETTLE, || {
        Ok(fs::read_to_string(&result).unwrap_or_default() == "hello from the archive\nport = 1\n")
    });

    // A task artifact whose digest does not match: the task fails, naming it.
    let bad = json!({
        "name": "badsum",
        "type": "batch",
        "task": {
            "command": "/bin/true",
            "env": {"SHOAL_TEST_MARKER": m},
            "resources": {"cpus": 0.25, "memory_mb": 32},
            "artifacts": [{"source": format!("file://{}", tgz.display()), "sha256": wrong}]
        },
        "restart": {"mode": "never"}
    });
    let (status, body) = c.agents[0].post("/v1/jobs", &bad).unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("the bad artifact fails its task", SETTLE, || {
        let r = task_reason(&c, "badsum");
        Ok(r.contains("task.artifacts[0]") && r.contains("sha256 mismatch"))
    });
    let r = task_reason(&c, "badsum");
    assert!(r.contains(&wrong) && r.contains("tree.tgz"), "{r}");
    for i in 0..3 {
        assert!(!blob(&c, i, &wrong).exists());
    }

    // Removed, and no job names it any more: every copy is collected.
    for job in ["reader", "badsum"] {
        let (status, body) = c.agents[0].delete(&format!("/v1/jobs/{job}")).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, out, err) = run_shoal(&["--json", "artifact", "rm", &hex], &env);
    assert!(status.success(), "{out}{err}");
    wait_until("every copy collected", SETTLE, || {
        Ok((0..3).all(|i| !blob(&c, i, &hex).exists() && !blob(&c, i, &tgz_hex).exists()))
    });
    let (code, v) = c.agents[1].get_any("/v1/artifacts").unwrap();
    assert_eq!(code, 200);
    assert_eq!(v, json!([]));
}

/// A static https server (Python's, with a certificate from a private CA),
/// killed when dropped.
struct HttpsServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HTTPS_SERVER: &str = r#"
import http.server, os, ssl, sys
os.chdir(sys.argv[1])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// Makes a CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it in
/// `dir`, and serves `dir/www` over https with it. None when openssl or
/// python3 is missing.
fn https_server(dir: &Path) -> Option<HttpsServer> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let has = |tool: &str, arg: &str| {
        Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has("openssl", "version") || !has("python3", "--version") {
        return None;
    }
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    openssl(
        &[
            &["req", "-x509", "-nodes", "-days", "2"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=shoal test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-nodes"][..],
            &ec,
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(HTTPS_SERVER)
        .arg(dir.join("www"))
        .arg(dir.join("srv.pem"))
        .arg(dir.join("srv.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    Some(HttpsServer { child, port })
}

/// An https artifact is fetched by an agent that trusts the server's CA
/// (`SSL_CERT_FILE`) and refused, naming the certificate problem, by one
/// that does not (the built-in roots do not hold a private CA).
#[test]
fn an_https_source_is_fetched_when_its_ca_is_trusted_and_refused_when_not() {
    let m = marker("https-artifact");
    let _cleanup = KillMarked(m.clone());
    let mut c = shoal_tests::Cluster::new();
    let root = c.root.path().to_owned();
    let tls = root.join("tls");
    fs::create_dir_all(tls.join("www")).unwrap();
    random_file(&tls.join("www/data.bin"), 200 * 1024 + 3, 7);
    let hex = sha256_hex(&tls.join("www/data.bin"));
    // `/sub` answers 301 with the relative `Location: /sub/` (Python's
    // server does for a directory), which serves its index.html.
    fs::create_dir_all(tls.join("www/sub")).unwrap();
    fs::write(
        tls.join("www/sub/index.html"),
        "behind a relative redirect\n",
    )
    .unwrap();
    let page_hex = sha256_hex(&tls.join("www/sub/index.html"));
    let Some(server) = https_server(&tls) else {
        eprintln!("skipped: needs openssl and python3");
        return;
    };
    let source = format!("https://127.0.0.1:{}/data.bin", server.port);
    let args: Vec<String> = ["--cpus", "2", "--memory-mb", "1024"]
        .map(str::to_owned)
        .to_vec();
    let mut trusting = shoal_tests::Spec::named("h0");
    trusting.args = args.clone();
    trusting.env = vec![(
        "SSL_CERT_FILE".into(),
        tls.join("ca.pem").display().to_string(),
    )];
    c.start(&trusting);
    let mut plain = shoal_tests::Spec::named("h1");
    plain.args = args;
    // Empty: the built-in roots, whatever this machine's environment says.
    plain.env = vec![("SSL_CERT_FILE".into(), String::new())];
    plain.join = vec![c.agents[0].info.gossip];
    plain.token = Some(c.token());
    c.start(&plain);
    c.wait_all_alive(2, SETTLE);

    let page = format!("https://127.0.0.1:{}/sub", server.port);
    let job = |name: &str, node: &str, out: &Path| {
        json!({
            "name": name,
            "type": "batch",
            "task": {
                "command": "/bin/sh",
                "args": ["-c", format!("cat page.html > {0}.page && cat data.bin > {0}", out.display())],
                "env": {"SHOAL_TEST_MARKER": m},
                "resources": {"cpus": 0.25, "memory_mb": 32},
                "artifacts": [
                    {"source": source, "sha256": hex, "dest": "data.bin"},
                    {"source": page, "sha256": page_hex, "dest": "page.html"}
                ]
            },
            "constraints": [{"attribute": "name", "op": "==", "value": node}],
            "restart": {"mode": "never"}
        })
    };
    let fetched = root.join("fetched.bin");
    let (status, body) = c.agents[0]
        .post("/v1/jobs", &job("trusted", "h0", &fetched))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("the trusting node fetched over https", SETTLE, || {
        Ok(fetched.is_file() && sha256_hex(&fetched) == hex)
    });
    assert_eq!(
        fs::read_to_string(root.join("fetched.bin.page")).unwrap(),
        "behind a relative redirect\n"
    );

    let refused = root.join("refused.bin");
    let (status, body) = c.agents[0]
        .post("/v1/jobs", &job("untrusted", "h1", &refused))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("the other node refuses the certificate", SETTLE, || {
        let r = task_reason(&c, "untrusted").to_lowercase();
        Ok(r.contains("task.artifacts[0]") && r.contains("certificate"))
    });
    assert!(!refused.exists(), "the task never ran");
    assert!(!blob(&c, 1, &hex).exists(), "nothing kept on h1");
    drop(server);
}
