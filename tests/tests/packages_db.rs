//! The built-in `postgresql` package on 3 real agents: a primary, and a
//! replica that finds it through shoal DNS, copies it with pg_basebackup
//! and follows it as a hot standby: the primary's `pg_stat_replication`
//! shows it streaming, and a row written on the primary is read on the
//! replica. Needs Debian's PostgreSQL 15 (`postgresql`, in
//! /usr/lib/postgresql/15/bin) and `dnsutils` (`.ci/run` installs them);
//! skips without them.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (as CI
//! does), the package runs it as the `postgres` user, with its data in a
//! directory that user can reach (the package's `data_dir`: here a
//! temporary one, removed at the end).

#![allow(clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use shoal_tests::packages::{cli_env, install_healthy, missing, shoal, wait_endpoints};
use shoal_tests::{Cluster, wait_until};

const SETTLE: Duration = Duration::from_secs(120);
const BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "shoal-test-pw";

/// `psql -Atc SQL` against 127.0.0.1:`port`: its output, or its error.
fn psql(port: u16, sql: &str) -> anyhow::Result<String> {
    let out = Command::new(format!("{BIN}/psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-Atc", sql])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "3")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn postgresql_primary_and_streaming_replica() {
    let bins = [
        format!("{BIN}/postgres"),
        format!("{BIN}/initdb"),
        format!("{BIN}/pg_basebackup"),
        format!("{BIN}/psql"),
    ];
    let mut need: Vec<&str> = bins.iter().map(String::as_str).collect();
    need.push("dig");
    if let Some(bin) = missing(&need) {
        eprintln!("skipped: needs {bin} (Debian postgresql-15, dnsutils)");
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root && missing(&["setpriv"]).is_some() {
        eprintln!(
            "skipped: running as root needs setpriv (util-linux) to run postgres as its user"
        );
        return;
    }
    // Removed last (declared first): after the cluster has stopped every
    // postgres.
    let data = tempfile::Builder::new()
        .prefix("shoal-test-pgdata-")
        .tempdir()
        .expect("a data dir");
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755))
        .expect("the data dir reachable by the postgres user");
    let c = Cluster::of("pg", 3, &["--cpus", "2", "--memory-mb", "2048"]);
    let dns = c.agents[0].info.dns.expect("agent 0 serves DNS");
    let env = cli_env(&c, 2);
    let mut sets = vec![
        format!("password={PASSWORD}"),
        "replicas=1".to_owned(),
        "memory_mb=512".to_owned(),
        "cpus=0.5".to_owned(),
        "shared_buffers=32MB".to_owned(),
        "wal_keep_size=64MB".to_owned(),
        format!("dns={dns}"),
    ];
    sets.push(format!("data_dir={}", data.path().display()));
    install_healthy(&env, "postgresql", "pg1", &sets, SETTLE);

    let primary = wait_endpoints(&c, "pg1/primary", "postgres", 1, SETTLE);
    let replica = wait_endpoints(&c, "pg1/replicas", "postgres", 1, SETTLE);
    let (primary, replica) = (primary[0].2, replica[0].2);

    wait_until(
        "the replica streaming in pg_stat_replication",
        SETTLE,
        || Ok(psql(primary, "select state from pg_stat_replication")? == "streaming"),
    );
    psql(
        primary,
        "create table greetings (word text); insert into greetings values ('hello')",
    )
    .expect("a row written on the primary");
    wait_until("the row read on the replica", SETTLE, || {
        Ok(psql(replica, "select word from greetings").unwrap_or_default() == "hello")
    });
    assert_eq!(
        psql(replica, "select pg_is_in_recovery()").unwrap(),
        "t",
        "the replica is a standby"
    );
    let refused = psql(replica, "insert into greetings values ('no')");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("read-only")),
        "{refused:?}"
    );

    let (ok, out, err) = shoal(&env, &["package", "uninstall", "pg1"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("remove it by hand"),
        "the notes say what stays: {out}"
    );
    wait_until("postgres stopped", SETTLE, || {
        Ok(psql(primary, "select 1").is_err())
    });
}
