//! `shoal package render|lint|search|describe|versions`: the package
//! commands that need no cluster (the built-in library, a directory or a
//! `.tar.gz`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use shoal_client::{Client, segment};
use shoal_package::{Level, Package, apply_set, library, lint};

use crate::output::table;

#[derive(Subcommand, Debug)]
pub enum PackageCommand {
    /// Render a package's jobs as they would be submitted, without a
    /// cluster: options checked, templates rendered, jobs validated.
    #[command(disable_version_flag = true)]
    Render {
        /// A package directory, a .tar.gz of one, or a package's name,
        /// looked up in the cluster's repositories (a path that exists
        /// wins; write ./redis for a directory).
        package: String,
        /// The package's version (default: the highest).
        #[arg(long = "version", value_name = "VERSION")]
        pkg_version: Option<String>,
        /// Instance name: every job is named under it (default: the
        /// package's name).
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// An option, NAME=VALUE (`replicas=3`, `tls.enabled=true`); the
        /// value is JSON when it parses as JSON, else a string (always a
        /// string for string options). Repeat for more; applied after
        /// --options.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A JSON file of options (an object).
        #[arg(long, value_name = "FILE.json")]
        options: Option<PathBuf>,
        /// Write each job to `DIR/<template>.toml` instead of printing them
        /// (what lint compares `tests/<case>.expected/` with).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Check a package: options have defaults that pass the schema, the
    /// templates render with them to valid jobs, tests/ cases render to
    /// their expected jobs. Exits non-zero on any error.
    Lint {
        /// A package directory, a .tar.gz, or a package's name.
        package: String,
    },
    /// List the packages of the cluster's repositories (the built-in
    /// library without an agent) whose name, tags or description contain
    /// TERM (all without one).
    Search {
        /// Word to look for (case-insensitive).
        term: Option<String>,
    },
    /// Show a package: what it is and every option with its default.
    #[command(disable_version_flag = true)]
    Describe {
        /// A package's name, a package directory or a .tar.gz.
        package: String,
        /// The package's version (default: the highest).
        #[arg(long = "version", value_name = "VERSION")]
        pkg_version: Option<String>,
    },
    /// List every version of a package that the repositories offer.
    Versions {
        /// Package name.
        name: String,
    },
    /// The cluster's package repositories: looked up in order, the
    /// built-in library last; the first that has a package wins.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Install a package in the cluster: render it here, record the
    /// installation and submit its jobs through the node you talk to.
    #[command(disable_version_flag = true)]
    Install {
        /// A package's name (from the cluster's repositories), a package
        /// directory or a .tar.gz.
        package: String,
        /// The package's version (default: the highest).
        #[arg(long = "version", value_name = "VERSION")]
        pkg_version: Option<String>,
        /// Instance name (default: the package's name): several
        /// instances of one package run side by side.
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// An option, NAME=VALUE (repeatable; see `render`).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A JSON file of options (an object).
        #[arg(long, value_name = "FILE.json")]
        options: Option<PathBuf>,
    },
    /// List the installations in the cluster, with their status (from
    /// their jobs' tasks).
    List {
        /// Uninstalled ones too.
        #[arg(long)]
        all: bool,
    },
    /// Upgrade an installation: render the package again with the
    /// options you gave before, --set over them, and the package's new
    /// defaults; jobs the new revision no longer has are stopped.
    #[command(disable_version_flag = true)]
    Upgrade {
        /// Instance name.
        instance: String,
        /// The package to render (default: the installation's package,
        /// from the repositories); a directory or a .tar.gz.
        #[arg(long, value_name = "PACKAGE")]
        package: Option<String>,
        /// The version to upgrade to (default: the highest).
        #[arg(long = "version", value_name = "VERSION")]
        pkg_version: Option<String>,
        /// An option, NAME=VALUE (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A JSON file of options (an object).
        #[arg(long, value_name = "FILE.json")]
        options: Option<PathBuf>,
        /// Print what would change (job by job) and write nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Make an installation as one of its earlier revisions was (its
    /// version, options and jobs).
    Rollback {
        /// Instance name.
        instance: String,
        /// The revision to go back to (`shoal package list --json` lists
        /// them).
        revision: u32,
    },
    /// Stop exactly an installation's jobs and remove it.
    Uninstall {
        /// Instance name.
        instance: String,
    },
}

/// `shoal package repo …`.
#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Add a repository (last in the lookup order, unless --first).
    Add {
        /// Its name (job-name rules).
        name: String,
        /// `dir:/ABSOLUTE/PATH`, a directory of packages on the node you
        /// talk to (it serves them to the others), or the http(s) URL of
        /// an index.json.
        url: String,
        /// Look it up before the others.
        #[arg(long)]
        first: bool,
    },
    /// Remove a repository (installations made from it stay).
    Remove {
        /// Its name.
        name: String,
    },
    /// List the repositories in lookup order.
    List,
}

/// Runs a `shoal package` command (`client`: for those that talk to the
/// cluster).
pub fn run(
    cmd: &PackageCommand,
    client: impl Fn() -> shoal_client::Client,
    json_out: bool,
) -> anyhow::Result<()> {
    use crate::installs;
    match cmd {
        PackageCommand::Install {
            package,
            pkg_version,
            instance,
            set,
            options,
        } => installs::install(
            &client(),
            json_out,
            (package, pkg_version.as_deref()),
            instance.as_deref(),
            options.as_deref(),
            set,
        ),
        PackageCommand::List { all } => installs::list(&client(), json_out, *all),
        PackageCommand::Upgrade {
            instance,
            package,
            pkg_version,
            set,
            options,
            plan,
        } => installs::upgrade(
            &client(),
            json_out,
            instance,
            (package.as_deref(), pkg_version.as_deref()),
            options.as_deref(),
            set,
            *plan,
        ),
        PackageCommand::Rollback { instance, revision } => {
            installs::rollback(&client(), json_out, instance, *revision)
        }
        PackageCommand::Uninstall { instance } => {
            installs::uninstall(&client(), json_out, instance)
        }
        PackageCommand::Render {
            package,
            pkg_version,
            instance,
            set,
            options,
            out,
        } => render(
            &load(package, pkg_version.as_deref(), &client())?.package,
            instance.as_deref(),
            set,
            options.as_deref(),
            out.as_deref(),
            json_out,
        ),
        PackageCommand::Lint { package } => {
            lint_cmd(&load(package, None, &client())?.package, json_out)
        }
        PackageCommand::Search { term } => search(&client(), term.as_deref(), json_out),
        PackageCommand::Describe {
            package,
            pkg_version,
        } => describe(&load(package, pkg_version.as_deref(), &client())?, json_out),
        PackageCommand::Versions { name } => versions(&client(), name, json_out),
        PackageCommand::Repo(r) => repo(&client(), r, json_out),
    }
}

/// A package named on the command line, and where it came from.
pub struct Loaded {
    /// The package.
    pub package: Package,
    /// `local:<digest>` for a path, else the repository's name
    /// (`builtin` for the library built into shoal).
    pub repository: String,
}

/// Loads a package: from a path that exists; else from the cluster's
/// repositories through the node `client` talks to (the first that has
/// it; `version` or the highest); else, with no agent to ask, from the
/// library built into this binary.
pub fn load(what: &str, version: Option<&str>, client: &Client) -> anyhow::Result<Loaded> {
    let path = Path::new(what);
    if path.exists() {
        let files = shoal_package::fs::load_path(path)?;
        let package = Package::from_files(files).with_context(|| format!("package {what}"))?;
        return Ok(Loaded {
            repository: format!("local:{}", package.digest()),
            package,
        });
    }
    let mut query = String::new();
    if let Some(v) = version {
        query = format!("?version={}", segment(v));
    }
    let name = segment(what);
    match client.get::<Value>(&format!("/v1/packages/{name}{query}")) {
        Ok(info) => {
            let repository = info["repository"].as_str().unwrap_or("builtin").to_owned();
            let version = info["version"].as_str().unwrap_or_default();
            let bytes = client.get_bytes(
                &format!(
                    "/v1/packages/{name}/archive?version={}&repository={}",
                    segment(version),
                    segment(&repository)
                ),
                MAX_ARCHIVE_BYTES,
            )?;
            let files = shoal_package::archive::unpack_tar_gz(&bytes)
                .with_context(|| format!("package {what} from repository {repository}"))?;
            let package = Package::from_files(files)
                .with_context(|| format!("package {what} from repository {repository}"))?;
            if info["digest"]
                .as_str()
                .is_some_and(|d| d != package.digest())
            {
                bail!(
                    "package {what} from repository {repository} changed while it was fetched: try again"
                );
            }
            Ok(Loaded {
                package,
                repository,
            })
        }
        Err(shoal_client::Error::Unreachable { base, .. }) if version.is_none() => {
            match library::get(what) {
                Some(p) => {
                    eprintln!(
                        "note: no agent at {base}: {what} is the built-in package of this binary (repositories need a running agent)"
                    );
                    Ok(Loaded {
                        package: p.with_context(|| format!("built-in package {what}"))?,
                        repository: "builtin".into(),
                    })
                }
                None => bail!(
                    "{what:?} is neither a package directory, a .tar.gz, nor a built-in package (built-in: {}), and no agent answers at {base} to look in the cluster's repositories",
                    library::names().join(", ")
                ),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Largest package archive fetched from a node.
const MAX_ARCHIVE_BYTES: u64 = 8 << 20;

/// The user's options from --options and --set, checked against the
/// package's schema later (by rendering).
pub fn user_options(pkg: &Package, file: Option<&Path>, sets: &[String]) -> anyhow::Result<Value> {
    let mut options = match file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not valid JSON", f.display()))?;
            if !v.is_object() {
                bail!(
                    "{}: options must be a JSON object of option names and values",
                    f.display()
                );
            }
            v
        }
        None => json!({}),
    };
    for s in sets {
        apply_set(&mut options, s, Some(pkg.options_schema()))
            .map_err(|e| anyhow::anyhow!("--set {e}"))?;
    }
    Ok(options)
}

fn render(
    pkg: &Package,
    instance: Option<&str>,
    sets: &[String],
    file: Option<&Path>,
    out: Option<&Path>,
    json_out: bool,
) -> anyhow::Result<()> {
    let options = user_options(pkg, file, sets)?;
    let instance = instance.unwrap_or(&pkg.manifest().name).to_owned();
    let jobs = pkg.render(&instance, &options)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for j in &jobs {
            let stem = j
                .template
                .trim_start_matches("jobs/")
                .trim_end_matches(".toml.j2");
            let path = dir.join(format!("{stem}.toml"));
            std::fs::write(&path, &j.toml)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ({})", path.display(), j.spec.name);
        }
        return Ok(());
    }
    if json_out {
        let all: Vec<Value> = jobs
            .iter()
            .map(|j| json!({"template": j.template, "spec": j.spec.to_json()}))
            .collect();
        return crate::print_json(&json!({
            "package": pkg.id(),
            "instance": instance,
            "options": options,
            "effective_options": pkg.effective_options(&options)?,
            "jobs": all,
        }));
    }
    for (i, j) in jobs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("# {} -> {}", j.template, j.spec.name);
        print!("{}", j.toml);
    }
    Ok(())
}

fn lint_cmd(pkg: &Package, json_out: bool) -> anyhow::Result<()> {
    let findings = lint(pkg);
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    if json_out {
        crate::print_json(&json!({"package": pkg.id(), "findings": findings}))?;
    } else {
        for f in &findings {
            println!("{f}");
        }
        println!(
            "{}: {errors} error(s), {} warning(s)",
            pkg.id(),
            findings.len() - errors
        );
    }
    if errors > 0 {
        bail!("{} does not pass lint ({errors} error(s))", pkg.id());
    }
    Ok(())
}

/// The packages the cluster's repositories offer (the built-in library
/// when no agent answers), as `GET /v1/packages` lists them.
fn offered(client: &Client, term: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let path = match term {
        Some(t) => format!("/v1/packages?q={}", segment(t)),
        None => "/v1/packages".to_owned(),
    };
    match client.get::<Vec<Value>>(&path) {
        Ok(all) => Ok(all),
        Err(shoal_client::Error::Unreachable { base, .. }) => {
            eprintln!("note: no agent at {base}: the built-in library of this binary only");
            let term = term.map(str::to_lowercase);
            let mut out = Vec::new();
            for (n, p) in library::all() {
                let p = p.with_context(|| format!("built-in package {n}"))?;
                let m = p.manifest();
                let hit = term.as_deref().is_none_or(|t| {
                    m.name.contains(t)
                        || m.description.to_lowercase().contains(t)
                        || m.tags.iter().any(|g| g.to_lowercase().contains(t))
                });
                if hit {
                    out.push(json!({
                        "name": m.name,
                        "version": m.version.to_string(),
                        "app_version": m.app_version,
                        "description": m.description,
                        "tags": m.tags,
                        "verified": m.verified,
                        "repository": "builtin",
                    }));
                }
            }
            Ok(out)
        }
        Err(e) => Err(e.into()),
    }
}

fn search(client: &Client, term: Option<&str>, json_out: bool) -> anyhow::Result<()> {
    let found = offered(client, term)?;
    if json_out {
        return crate::print_json(&found);
    }
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|p| {
            vec![
                text(p, "name"),
                text(p, "version"),
                text(p, "app_version"),
                if p["verified"] == true { "yes" } else { "no" }.into(),
                text(p, "repository"),
                text(p, "description"),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME",
                "VERSION",
                "APP VERSION",
                "VERIFIED",
                "REPOSITORY",
                "DESCRIPTION"
            ],
            &rows
        )
    );
    Ok(())
}

fn describe(loaded: &Loaded, json_out: bool) -> anyhow::Result<()> {
    let pkg = &loaded.package;
    let m = pkg.manifest();
    let schema = pkg.options_schema();
    if json_out {
        return crate::print_json(&json!({
            "manifest": m,
            "repository": loaded.repository,
            "digest": pkg.digest(),
            "options_schema": schema.raw(),
            "defaults": schema.defaults(),
            "templates": pkg.templates().keys().collect::<Vec<_>>(),
        }));
    }
    println!(
        "{} {}  (app {})",
        m.name,
        m.version,
        m.app_version.as_deref().unwrap_or("-")
    );
    println!("{}", m.description);
    let line = |k: &str, v: String| println!("{:<14} {v}", format!("{k}:"));
    if !m.tags.is_empty() {
        line("Tags", m.tags.join(", "));
    }
    if let Some(x) = &m.maintainer {
        line("Maintainer", x.clone());
    }
    if let Some(x) = &m.license {
        line("License", x.clone());
    }
    line(
        "Verified",
        if m.verified {
            "yes: tested on shoal"
        } else {
            "no: lint and render only"
        }
        .into(),
    );
    if !m.requires.is_empty() {
        line("Nodes need", m.requires.join(", "));
    }
    if let Some(r) = &m.upgrades_from {
        line("Upgrades from", r.to_string());
    }
    line(
        "Jobs",
        pkg.templates()
            .keys()
            .map(|t| t.trim_start_matches("jobs/").trim_end_matches(".toml.j2"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    line("Repository", loaded.repository.clone());
    line("Digest", pkg.digest());
    println!();
    let props = schema.raw().get("properties").and_then(Value::as_object);
    let rows: Vec<Vec<String>> = props
        .into_iter()
        .flatten()
        .map(|(k, p)| {
            let ty = match p.get("type") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "-".into(),
            };
            vec![
                k.clone(),
                ty,
                p.get("default")
                    .map_or_else(|| "(required)".into(), Value::to_string),
                p.get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["OPTION", "TYPE", "DEFAULT", "DESCRIPTION"], &rows)
    );
    Ok(())
}

fn versions(client: &Client, name: &str, json_out: bool) -> anyhow::Result<()> {
    let all: Vec<Value> = match client.get(&format!("/v1/packages/{}/versions", segment(name))) {
        Ok(v) => v,
        Err(shoal_client::Error::Unreachable { base, .. }) => {
            eprintln!("note: no agent at {base}: the built-in library of this binary only");
            let Some(pkg) = library::get(name) else {
                bail!(
                    "no built-in package {name:?} (built-in: {})",
                    library::names().join(", ")
                );
            };
            let pkg = pkg?;
            vec![json!({
                "repository": "builtin",
                "version": pkg.manifest().version.to_string(),
                "digest": pkg.digest(),
            })]
        }
        Err(e) => return Err(e.into()),
    };
    if json_out {
        return crate::print_json(&all);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|v| {
            ["version", "repository", "digest"]
                .iter()
                .map(|k| v[*k].as_str().unwrap_or("-").to_owned())
                .collect()
        })
        .collect();
    print!("{}", table(&["VERSION", "REPOSITORY", "DIGEST"], &rows));
    Ok(())
}

/// `shoal package repo add|remove|list`.
fn repo(client: &Client, cmd: &RepoCommand, json_out: bool) -> anyhow::Result<()> {
    let listed: Value = match cmd {
        RepoCommand::Add { name, url, first } => client.post(
            "/v1/repositories",
            &json!({"name": name, "url": url, "first": first}),
        )?,
        RepoCommand::Remove { name } => {
            client.delete(&format!("/v1/repositories/{}", segment(name)))?
        }
        RepoCommand::List => client.get("/v1/repositories")?,
    };
    if json_out {
        return crate::print_json(&listed);
    }
    match cmd {
        RepoCommand::Add { name, url, .. } => {
            println!("added repository {name} ({url}); `shoal package repo list` shows the order");
        }
        RepoCommand::Remove { name } => println!("removed repository {name}"),
        RepoCommand::List => {
            let rows: Vec<Vec<String>> = listed
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, r)| {
                    vec![
                        (i + 1).to_string(),
                        r["name"].as_str().unwrap_or("-").to_owned(),
                        r["url"].as_str().unwrap_or("-").to_owned(),
                        r["node"]
                            .as_str()
                            .filter(|n| !n.is_empty())
                            .unwrap_or("-")
                            .to_owned(),
                    ]
                })
                .collect();
            print!("{}", table(&["ORDER", "NAME", "URL", "NODE"], &rows));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    /// A client of no agent: packages come from the built-in library.
    fn offline() -> Client {
        Client::new("127.0.0.1:1", None)
    }

    fn builtin(name: &str) -> anyhow::Result<Package> {
        Ok(load(name, None, &offline())?.package)
    }

    #[test]
    fn set_and_options_file_build_the_users_options() {
        let pkg = builtin("redis").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("o.json");
        std::fs::write(&file, r#"{"replicas": 1, "maxmemory": "1gb"}"#).unwrap();
        let v = user_options(
            &pkg,
            Some(&file),
            &["replicas=4".into(), "maxmemory=64mb".into()],
        )
        .unwrap();
        assert_eq!(v, json!({"replicas": 4, "maxmemory": "64mb"}));
    }

    #[test]
    fn a_package_directory_renders_like_the_builtin() {
        let dir = tempfile::tempdir().unwrap();
        for (path, data) in library::files("redis").unwrap() {
            let p = dir.path().join(&path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let from_dir = builtin(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(from_dir.digest(), builtin("redis").unwrap().digest());
        assert!(
            builtin("no-such-package")
                .unwrap_err()
                .to_string()
                .contains("redis")
        );
    }

    #[test]
    fn the_commands_parse() {
        let cli = Cli::try_parse_from([
            "shoal",
            "package",
            "render",
            "redis",
            "--instance",
            "r1",
            "--set",
            "replicas=3",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Package(PackageCommand::Render { .. })
        ));
        let redis = builtin("redis").unwrap();
        render(
            &redis,
            Some("r1"),
            &["replicas=3".into()],
            None,
            None,
            false,
        )
        .unwrap();
        let e = render(&redis, Some("r1"), &["replica=3".into()], None, None, false).unwrap_err();
        assert!(e.to_string().contains("/replica"), "{e}");
    }
}
