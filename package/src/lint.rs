//! `lint`: everything that can be checked without a cluster.

use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};

use crate::options::Fault;
use crate::{MANIFEST_FILE, Package, RenderError, SCHEMA_FILE};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The package must not be published like this.
    Error,
    /// Worth fixing; the package works.
    Warning,
}

/// One thing lint found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LintFinding {
    /// Error or warning.
    pub level: Level,
    /// The file concerned (`options.schema.json`, `tests/ha.expected/primary.toml`).
    pub file: String,
    /// What is wrong and what to do; a differing expectation carries a
    /// unified diff (expected, then rendered).
    pub message: String,
}

impl fmt::Display for LintFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.file, self.message)
    }
}

/// Checks a loaded package (loading already checked the manifest, the
/// schema and the template syntax):
///
/// - every option has a default, except `required` ones (a warning: every
///   install must give them), and the defaults pass the schema;
/// - the templates render with the defaults to valid jobs, named under the
///   instance, and so do the notes;
/// - each `tests/<case>.json` renders, and its jobs equal
///   `tests/<case>.expected/<job>.toml` (a diff when they differ; the job is
///   the template's name without `.toml.j2`);
/// - files outside the format are mentioned.
///
/// Findings are sorted: errors first.
pub fn lint(pkg: &Package) -> Vec<LintFinding> {
    let mut out = Vec::new();
    let mut add = |level, file: &str, message: String| {
        out.push(LintFinding {
            level,
            file: file.to_owned(),
            message,
        });
    };
    let name = pkg.manifest().name.clone();

    let (missing, required) = pkg.options_schema().without_default();
    for path in &missing {
        add(
            Level::Error,
            SCHEMA_FILE,
            format!(
                "option {path} has no default: give it a \"default\" so that an install without options works (or list it in \"required\" if every install must give it)"
            ),
        );
    }
    for path in &required {
        add(
            Level::Warning,
            SCHEMA_FILE,
            format!("option {path} is required with no default: every install must give it"),
        );
    }

    let tests: Vec<(String, &Vec<u8>)> = pkg
        .files()
        .iter()
        .filter_map(|(p, d)| {
            let case = p.strip_prefix("tests/")?.strip_suffix(".json")?;
            (!case.contains('/')).then(|| (case.to_owned(), d))
        })
        .collect();

    if required.is_empty() {
        match pkg.render(&name, &json!({})) {
            Ok(_) => {}
            Err(e) => add(
                Level::Error,
                &render_file(&e),
                format!("does not render with the default options: {e}"),
            ),
        }
        for uninstall in [false, true] {
            if let Err(e) = pkg.notes(&name, &json!({}), uninstall)
                && !matches!(e, RenderError::Options(_))
            {
                add(
                    Level::Error,
                    MANIFEST_FILE,
                    format!("notes do not render with the default options: {e}"),
                );
            }
        }
    } else if tests.is_empty() {
        add(
            Level::Warning,
            "tests/",
            "the package has required options, so lint cannot render it with defaults alone: add tests/<case>.json giving them".into(),
        );
    }

    for (case, data) in &tests {
        let file = format!("tests/{case}.json");
        let options: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => {
                add(Level::Error, &file, format!("not valid JSON: {e}"));
                continue;
            }
        };
        let jobs = match pkg.render(&name, &options) {
            Ok(j) => j,
            Err(e) => {
                add(Level::Error, &file, format!("does not render: {e}"));
                continue;
            }
        };
        let dir = format!("tests/{case}.expected/");
        let expected: Vec<(&String, &Vec<u8>)> = pkg
            .files()
            .iter()
            .filter(|(p, _)| p.starts_with(&dir))
            .collect();
        if expected.is_empty() {
            add(
                Level::Warning,
                &file,
                format!(
                    "renders, but has no expected jobs to compare with: write them with `shoal package render PKG --options {file} --out {dir}`"
                ),
            );
            continue;
        }
        for job in &jobs {
            let stem = job
                .template
                .trim_start_matches("jobs/")
                .trim_end_matches(".toml.j2");
            let want_file = format!("{dir}{stem}.toml");
            match pkg.files().get(&want_file) {
                None => add(
                    Level::Error,
                    &want_file,
                    format!(
                        "is missing: {} renders job {:?}",
                        job.template, job.spec.name
                    ),
                ),
                Some(want) => {
                    let want = String::from_utf8_lossy(want);
                    if want.trim_end() != job.toml.trim_end() {
                        let diff =
                            similar::TextDiff::from_lines(want.trim_end(), job.toml.trim_end())
                                .unified_diff()
                                .context_radius(2)
                                .header(&want_file, &format!("rendered from {}", job.template))
                                .to_string();
                        add(
                            Level::Error,
                            &want_file,
                            format!(
                                "differs from what {} renders with {file}:\n{diff}",
                                job.template
                            ),
                        );
                    }
                }
            }
        }
        for (p, _) in expected {
            let stem = p[dir.len()..].trim_end_matches(".toml");
            if !pkg
                .templates()
                .contains_key(&format!("jobs/{stem}.toml.j2"))
            {
                add(
                    Level::Error,
                    p,
                    format!("expects a job no template renders (no jobs/{stem}.toml.j2)"),
                );
            }
        }
    }

    for path in pkg.files().keys() {
        let known = path == MANIFEST_FILE
            || path == SCHEMA_FILE
            || (path.starts_with("jobs/")
                && path.ends_with(".toml.j2")
                && path.matches('/').count() == 1)
            || path.starts_with("tests/")
            || path.starts_with("files/")
            || path.starts_with("README")
            || path.starts_with("LICENSE");
        if !known {
            add(
                Level::Warning,
                path,
                "is not part of the package format (package.toml, options.schema.json, jobs/*.toml.j2, tests/, files/, README, LICENSE): it is ignored".into(),
            );
        }
    }
    out.sort_by_key(|f| f.level);
    out
}

fn render_file(e: &RenderError) -> String {
    match e {
        RenderError::Template { file, .. } | RenderError::Job { file, .. } => file.clone(),
        RenderError::Options(o) if o.problems.iter().any(|p| p.fault == Fault::Package) => {
            SCHEMA_FILE.into()
        }
        _ => "package".into(),
    }
}
