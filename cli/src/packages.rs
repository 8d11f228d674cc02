//! `shoal package render|lint|search|describe|versions`: the package
//! commands that need no cluster (the built-in library, a directory or a
//! `.tar.gz`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use shoal_package::{Level, Package, apply_set, library, lint};

use crate::output::table;

#[derive(Subcommand, Debug)]
pub enum PackageCommand {
    /// Render a package's jobs as they would be submitted, without a
    /// cluster: options checked, templates rendered, jobs validated.
    Render {
        /// A package directory, a .tar.gz of one, or a built-in package's
        /// name (a path that exists wins; write ./redis for a directory).
        package: String,
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
        /// A package directory, a .tar.gz, or a built-in package's name.
        package: String,
    },
    /// List the built-in packages whose name, tags or description contain
    /// TERM (all without one).
    Search {
        /// Word to look for (case-insensitive).
        term: Option<String>,
    },
    /// Show a package: what it is and every option with its default.
    Describe {
        /// A built-in package's name, a package directory or a .tar.gz.
        package: String,
    },
    /// List the versions of a built-in package.
    Versions {
        /// Built-in package name.
        name: String,
    },
    /// Install a package in the cluster: render it here, record the
    /// installation and submit its jobs through the node you talk to.
    Install {
        /// A built-in package's name, a package directory or a .tar.gz.
        package: String,
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
    Upgrade {
        /// Instance name.
        instance: String,
        /// The package to render (default: the installation's package
        /// from the built-in library); a directory or a .tar.gz.
        #[arg(long, value_name = "PACKAGE")]
        package: Option<String>,
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
            instance,
            set,
            options,
        } => installs::install(
            &client(),
            json_out,
            package,
            instance.as_deref(),
            options.as_deref(),
            set,
        ),
        PackageCommand::List { all } => installs::list(&client(), json_out, *all),
        PackageCommand::Upgrade {
            instance,
            package,
            set,
            options,
            plan,
        } => installs::upgrade(
            &client(),
            json_out,
            instance,
            package.as_deref(),
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
            instance,
            set,
            options,
            out,
        } => render(
            package,
            instance.as_deref(),
            set,
            options.as_deref(),
            out.as_deref(),
            json_out,
        ),
        PackageCommand::Lint { package } => lint_cmd(package, json_out),
        PackageCommand::Search { term } => search(term.as_deref(), json_out),
        PackageCommand::Describe { package } => describe(package, json_out),
        PackageCommand::Versions { name } => versions(name, json_out),
    }
}

/// Loads a package from a path that exists, else from the built-in library.
pub fn load(what: &str) -> anyhow::Result<Package> {
    let path = Path::new(what);
    if path.exists() {
        let files = shoal_package::fs::load_path(path)?;
        return Package::from_files(files).with_context(|| format!("package {what}"));
    }
    match library::get(what) {
        Some(p) => Ok(p.with_context(|| format!("built-in package {what}"))?),
        None => bail!(
            "{what:?} is neither a package directory, a .tar.gz, nor a built-in package (built-in: {}; `shoal package search` lists them)",
            library::names().join(", ")
        ),
    }
}

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
    what: &str,
    instance: Option<&str>,
    sets: &[String],
    file: Option<&Path>,
    out: Option<&Path>,
    json_out: bool,
) -> anyhow::Result<()> {
    let pkg = load(what)?;
    let options = user_options(&pkg, file, sets)?;
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

fn lint_cmd(what: &str, json_out: bool) -> anyhow::Result<()> {
    let pkg = load(what)?;
    let findings = lint(&pkg);
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

fn builtin() -> anyhow::Result<Vec<Package>> {
    library::all()
        .into_iter()
        .map(|(n, p)| p.with_context(|| format!("built-in package {n}")))
        .collect()
}

fn search(term: Option<&str>, json_out: bool) -> anyhow::Result<()> {
    let term = term.map(str::to_lowercase);
    let found: Vec<Package> = builtin()?
        .into_iter()
        .filter(|p| {
            let m = p.manifest();
            term.as_deref().is_none_or(|t| {
                m.name.contains(t)
                    || m.description.to_lowercase().contains(t)
                    || m.tags.iter().any(|g| g.to_lowercase().contains(t))
            })
        })
        .collect();
    if json_out {
        let all: Vec<_> = found.iter().map(|p| p.manifest()).collect();
        return crate::print_json(&all);
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|p| {
            let m = p.manifest();
            vec![
                m.name.clone(),
                m.version.to_string(),
                m.app_version.clone().unwrap_or_else(|| "-".into()),
                if m.verified { "yes" } else { "no" }.into(),
                m.description.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "VERSION", "APP VERSION", "VERIFIED", "DESCRIPTION"],
            &rows
        )
    );
    Ok(())
}

fn describe(what: &str, json_out: bool) -> anyhow::Result<()> {
    let pkg = load(what)?;
    let m = pkg.manifest();
    let schema = pkg.options_schema();
    if json_out {
        return crate::print_json(&json!({
            "manifest": m,
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

fn versions(name: &str, json_out: bool) -> anyhow::Result<()> {
    let Some(pkg) = library::get(name) else {
        bail!(
            "no built-in package {name:?} (built-in: {})",
            library::names().join(", ")
        );
    };
    let pkg = pkg?;
    let m = pkg.manifest();
    if json_out {
        return crate::print_json(&json!([{
            "version": m.version.to_string(),
            "app_version": m.app_version,
            "repository": "built-in",
            "digest": pkg.digest(),
        }]));
    }
    let rows = vec![vec![
        m.version.to_string(),
        m.app_version.clone().unwrap_or_else(|| "-".into()),
        "built-in".into(),
    ]];
    print!(
        "{}",
        table(&["VERSION", "APP VERSION", "REPOSITORY"], &rows)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    #[test]
    fn set_and_options_file_build_the_users_options() {
        let pkg = load("redis").unwrap();
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
        let from_dir = load(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(from_dir.digest(), load("redis").unwrap().digest());
        assert!(
            load("no-such-package")
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
        render(
            "redis",
            Some("r1"),
            &["replicas=3".into()],
            None,
            None,
            false,
        )
        .unwrap();
        let e = render(
            "redis",
            Some("r1"),
            &["replica=3".into()],
            None,
            None,
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/replica"), "{e}");
    }
}
