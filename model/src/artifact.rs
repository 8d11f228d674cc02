//! Artifacts of a task (`[[task.artifacts]]`): files the node fetches into
//! the task's sandbox before it starts, each checked against its sha256.
//! The node that runs the task fetches them (from peers that hold them when
//! it can); this module only describes and validates them.

use serde::{Deserialize, Serialize};

use crate::spec::Problems;

/// Artifacts per task, at most.
const MAX_ARTIFACTS: usize = 16;
/// The prefix of an artifact stored in the cluster (`shoal artifact put`).
pub const SHOAL_SOURCE_PREFIX: &str = "shoal:sha256:";

/// One artifact, every default written out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Artifact {
    /// Where it comes from: `http://…`, `https://…`, `file:///…` (a path on
    /// the node that runs the task) or `shoal:sha256:<hex>` (stored in the
    /// cluster with `shoal artifact put`).
    pub source: String,
    /// Its sha256, 64 lower-case hex digits.
    pub sha256: String,
    /// Unpack it (`.tar`, `.tar.gz`, `.zip`, recognised by their content)
    /// into `dest`, a directory, rather than writing the file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extract: bool,
    /// Where it goes, relative to the task's sandbox: the file (or, with
    /// `extract`, the directory).
    pub dest: String,
}

impl Artifact {
    /// The digest of a `shoal:sha256:<hex>` source.
    pub fn shoal_digest(&self) -> Option<&str> {
        self.source.strip_prefix(SHOAL_SOURCE_PREFIX)
    }
}

/// An artifact as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawArtifact {
    source: Option<String>,
    sha256: Option<String>,
    extract: Option<bool>,
    dest: Option<String>,
}

/// Whether `s` is a sha256 written as 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `dest` is a path inside the sandbox: relative, no `..`, no
/// empty or NUL-bearing name.
pub(crate) fn dest_problem(dest: &str) -> Option<String> {
    if dest.is_empty() {
        return Some("must not be empty (use \".\" for the sandbox itself)".into());
    }
    if dest.starts_with('/') {
        return Some(format!(
            "must be relative to the task's sandbox (got {dest:?})"
        ));
    }
    if dest.contains('\0') {
        return Some("must not contain a NUL byte".into());
    }
    if dest.split('/').any(|c| c == "..") {
        return Some(format!(
            "must stay inside the task's sandbox: no `..` (got {dest:?})"
        ));
    }
    None
}

/// The last segment of a URL's path, without query or fragment.
fn file_name_of(source: &str) -> Option<String> {
    let rest = source.split_once("://")?.1;
    let path = rest.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_owned())
}

/// Validates the artifacts of a task.
pub(crate) fn validate_artifacts(raw: Vec<RawArtifact>, p: &mut Problems) -> Vec<Artifact> {
    if raw.len() > MAX_ARTIFACTS {
        p.add(
            "task.artifacts",
            format!("at most {MAX_ARTIFACTS} artifacts"),
        );
    }
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, a)| a.validate(&format!("task.artifacts[{i}]"), p))
        .collect()
}

impl RawArtifact {
    fn validate(self, field: &str, p: &mut Problems) -> Option<Artifact> {
        let before = p.len();
        let Some(source) = self.source.filter(|s| !s.trim().is_empty()) else {
            p.add(
                format!("{field}.source"),
                "is required: https://…, http://…, file:///… or shoal:sha256:<hex>",
            );
            return None;
        };
        p.text(&format!("{field}.source"), &source);
        let given = self.sha256.map(|s| s.to_ascii_lowercase());
        if let Some(s) = &given
            && !is_sha256_hex(s)
        {
            p.add(
                format!("{field}.sha256"),
                format!("must be 64 hex digits (got {s:?}); `sha256sum FILE` prints it"),
            );
        }
        let sha256 = if let Some(hex) = source.strip_prefix(SHOAL_SOURCE_PREFIX) {
            if !is_sha256_hex(hex) {
                p.add(
                    format!("{field}.source"),
                    format!(
                        "a stored artifact is shoal:sha256:<64 lower-case hex digits> (got {source:?}); `shoal artifact list` shows them"
                    ),
                );
            }
            if let Some(s) = &given
                && s != hex
            {
                p.add(
                    format!("{field}.sha256"),
                    format!(
                        "differs from the source's digest ({hex}): leave it out or make them equal"
                    ),
                );
            }
            hex.to_owned()
        } else if source.starts_with("http://") || source.starts_with("https://") {
            if file_name_of(&source).is_none() && self.dest.is_none() {
                p.add(
                    format!("{field}.dest"),
                    format!("is required: {source:?} names no file"),
                );
            }
            match given {
                Some(s) => s,
                None => {
                    p.add(
                        format!("{field}.sha256"),
                        "is required for an http(s) or file source, so that what arrives can be checked (`sha256sum FILE` prints it)",
                    );
                    String::new()
                }
            }
        } else if let Some(path) = source.strip_prefix("file://") {
            if !path.starts_with('/') {
                p.add(
                    format!("{field}.source"),
                    format!("a file source is file:///absolute/path (got {source:?})"),
                );
            }
            match given {
                Some(s) => s,
                None => {
                    p.add(
                        format!("{field}.sha256"),
                        "is required for an http(s) or file source, so that what arrives can be checked (`sha256sum FILE` prints it)",
                    );
                    String::new()
                }
            }
        } else {
            p.add(
                format!("{field}.source"),
                format!(
                    "unknown source {source:?}: use https://…, http://…, file:///… or shoal:sha256:<hex>"
                ),
            );
            String::new()
        };
        let extract = self.extract.unwrap_or(false);
        let dest = match self.dest {
            Some(d) => {
                if let Some(why) = dest_problem(&d) {
                    p.add(format!("{field}.dest"), why);
                }
                p.text(&format!("{field}.dest"), &d);
                d
            }
            None if extract => ".".to_owned(),
            None => match source.strip_prefix(SHOAL_SOURCE_PREFIX) {
                Some(hex) => format!("artifact-{}", hex.get(..16).unwrap_or(hex)),
                None => file_name_of(&source).unwrap_or_default(),
            },
        };
        if !extract && (dest == "." || dest.ends_with('/')) {
            p.add(
                format!("{field}.dest"),
                format!("names a directory ({dest:?}): a file needs a name, or set extract = true"),
            );
        }
        (p.len() == before).then_some(Artifact {
            source,
            sha256,
            extract,
            dest,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::{JobSpec, SpecError};

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn with(artifacts: Value) -> Result<JobSpec, SpecError> {
        JobSpec::from_json(json!({
            "name": "web",
            "task": {"command": "true", "artifacts": artifacts}
        }))
    }

    fn problem(artifacts: Value) -> (String, String) {
        let e = with(artifacts).unwrap_err();
        (e.field().to_owned(), e.errors[0].message.clone())
    }

    #[test]
    fn defaults_are_written_out() {
        let s = with(json!([
            {"source": format!("shoal:sha256:{HEX}")},
            {"source": "https://example.com/dl/spark.tgz?x=1", "sha256": HEX.to_uppercase(), "extract": true},
            {"source": "file:///srv/data.bin", "sha256": HEX},
        ]))
        .unwrap();
        let a = &s.task.artifacts;
        assert_eq!(a[0].sha256, HEX);
        assert_eq!(a[0].dest, "artifact-9f86d081884c7d65");
        assert!(!a[0].extract);
        assert_eq!(a[1].sha256, HEX, "lower-cased");
        assert_eq!(a[1].dest, ".");
        assert_eq!(a[2].dest, "data.bin");
        // Canonical: the validated spec reads back the same.
        assert_eq!(JobSpec::from_json(s.to_json()).unwrap(), s);
        // No artifacts: nothing written.
        let plain = JobSpec::from_json(json!({"name": "w", "task": {"command": "true"}})).unwrap();
        assert!(plain.to_json()["task"].get("artifacts").is_none());
    }

    #[test]
    fn problems_name_the_field() {
        let (f, m) = problem(json!([{"source": "https://example.com/a.tgz"}]));
        assert_eq!(f, "task.artifacts[0].sha256");
        assert!(m.contains("is required"), "{m}");
        let (f, _) = problem(json!([{"source": "https://x/a", "sha256": "abc"}]));
        assert_eq!(f, "task.artifacts[0].sha256");
        let (f, _) = problem(json!([{"source": "shoal:sha256:xyz"}]));
        assert_eq!(f, "task.artifacts[0].source");
        let (f, m) =
            problem(json!([{"source": format!("shoal:sha256:{HEX}"), "sha256": "0".repeat(64)}]));
        assert_eq!(f, "task.artifacts[0].sha256");
        assert!(m.contains("differs"), "{m}");
        let (f, _) = problem(json!([{"source": "ftp://x/a", "sha256": HEX}]));
        assert_eq!(f, "task.artifacts[0].source");
        let (f, _) = problem(json!([{"source": "file://rel/a", "sha256": HEX}]));
        assert_eq!(f, "task.artifacts[0].source");
        let (f, m) = problem(json!([{"source": "http://x/a", "sha256": HEX, "dest": "../a"}]));
        assert_eq!(f, "task.artifacts[0].dest");
        assert!(m.contains(".."), "{m}");
        let (f, _) = problem(json!([{"source": "http://x/a", "sha256": HEX, "dest": "/etc/a"}]));
        assert_eq!(f, "task.artifacts[0].dest");
        let (f, _) = problem(json!([{"source": "http://x/a", "sha256": HEX, "dest": "a/../../b"}]));
        assert_eq!(f, "task.artifacts[0].dest");
        let (f, _) = problem(json!([{"source": "http://x/", "sha256": HEX}]));
        assert_eq!(f, "task.artifacts[0].dest");
        let (f, _) = problem(json!([{"source": "http://x/a", "sha256": HEX, "dest": "."}]));
        assert_eq!(f, "task.artifacts[0].dest");
        let (f, _) = problem(json!([{"sha256": HEX}]));
        assert_eq!(f, "task.artifacts[0].source");
        let (f, _) = problem(json!([{"source": "http://x/a", "sha256": HEX, "mode": "0644"}]));
        assert!(f.starts_with("task.artifacts"), "{f}");
    }

    #[test]
    fn toml_form() {
        let s = JobSpec::from_toml(&format!(
            r#"
name = "spark"
[task]
command = "./bin/run"
[[task.artifacts]]
source = "shoal:sha256:{HEX}"
extract = true
dest = "dist"
"#
        ))
        .unwrap();
        assert_eq!(s.task.artifacts[0].dest, "dist");
        assert!(s.task.artifacts[0].extract);
    }
}
