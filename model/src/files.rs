//! `[[task.files]]`: small text files (configuration, usually rendered by a
//! package's `files/` templates) written into the task's sandbox before it
//! starts. They travel in the job's spec, so in the replicated state: they
//! are kept small ([`MAX_FILE_BYTES`] each, [`MAX_FILES_BYTES`] per task);
//! anything bigger is an artifact.

use serde::{Deserialize, Serialize};

use crate::artifact::dest_problem;
use crate::spec::Problems;

/// Largest content of one file.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// Largest content of a task's files together.
pub const MAX_FILES_BYTES: usize = 256 * 1024;
/// Most files a task has.
const MAX_FILES: usize = 32;

/// A file written into the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskFile {
    /// Where, relative to the sandbox (`conf/redis.conf`); parent
    /// directories are made.
    pub path: String,
    /// What it holds (UTF-8 text).
    pub content: String,
}

/// As written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTaskFile {
    path: Option<String>,
    content: Option<String>,
}

/// Validates `task.files`.
pub(crate) fn validate_files(raw: Vec<RawTaskFile>, p: &mut Problems) -> Vec<TaskFile> {
    if raw.len() > MAX_FILES {
        p.add("task.files", format!("at most {MAX_FILES} files"));
    }
    let mut total = 0;
    let mut out: Vec<TaskFile> = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        let field = format!("task.files[{i}]");
        let Some(path) = f.path else {
            p.add(format!("{field}.path"), "is required: where in the sandbox");
            continue;
        };
        if let Some(why) = dest_problem(&path) {
            p.add(format!("{field}.path"), why);
        } else if path == "." || path.ends_with('/') {
            p.add(
                format!("{field}.path"),
                format!("names a directory ({path:?}): a file needs a name"),
            );
        }
        if let Some(j) = out.iter().position(|o| o.path == path) {
            p.add(
                format!("{field}.path"),
                format!("{path:?} is written twice (task.files[{j}] has it too)"),
            );
        }
        let content = f.content.unwrap_or_default();
        if content.len() > MAX_FILE_BYTES {
            p.add(
                format!("{field}.content"),
                format!(
                    "is {} bytes, more than {MAX_FILE_BYTES}: a bigger file is an artifact (see [[task.artifacts]])",
                    content.len()
                ),
            );
        }
        if content.contains('\0') {
            p.add(format!("{field}.content"), "must not contain a NUL byte");
        }
        total += content.len();
        out.push(TaskFile { path, content });
    }
    if total > MAX_FILES_BYTES {
        p.add(
            "task.files",
            format!("hold {total} bytes, more than {MAX_FILES_BYTES}: use artifacts for big files"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::JobSpec;

    fn problem(files: serde_json::Value) -> String {
        let e = JobSpec::from_json(json!({
            "name": "web", "task": {"command": "/bin/true", "files": files}
        }))
        .unwrap_err();
        format!("{}: {}", e.field(), e)
    }

    #[test]
    fn files_stay_in_the_sandbox_are_written_once_and_are_small() {
        let ok = JobSpec::from_json(json!({"name": "web", "task": {"command": "/bin/true",
            "files": [{"path": "conf/a.conf", "content": "x = 1\n"}]}}))
        .unwrap();
        assert_eq!(ok.task.files[0].path, "conf/a.conf");
        assert!(
            problem(json!([{"path": "../etc/passwd", "content": ""}]))
                .contains("task.files[0].path")
        );
        assert!(problem(json!([{"path": "/etc/passwd", "content": ""}])).contains("relative"));
        let twice = problem(json!([{"path": "a", "content": ""}, {"path": "a", "content": ""}]));
        assert!(
            twice.contains("task.files[1].path") && twice.contains("twice"),
            "{twice}"
        );
        let big = problem(json!([{"path": "a", "content": "x".repeat(super::MAX_FILE_BYTES + 1)}]));
        assert!(
            big.contains("task.files[0].content") && big.contains("artifact"),
            "{big}"
        );
        assert!(problem(json!([{"content": "x"}])).contains("task.files[0].path"));
    }
}
