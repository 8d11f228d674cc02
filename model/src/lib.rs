//! Jobs: what users ask shoal to run.
//!
//! A [`JobSpec`] is the same structure in TOML (job files) and JSON (the
//! API). [`JobSpec::from_json`] and [`JobSpec::from_toml`] parse and validate
//! it; every problem names its field, as in
//! `task.resources.cpus: must be > 0 (got -1)`. Defaults are filled in, so a
//! validated spec is complete and canonical: the same spec always serializes
//! to the same JSON. [`diff`] lists what changed between two specs, field by
//! field.
//!
//! Pure: no I/O, no clock.

pub mod acl;
mod artifact;
mod check;
mod constraint;
mod diff;
mod env;
mod files;
mod ports;
mod spec;
mod update;

pub use artifact::{Artifact, SHOAL_SOURCE_PREFIX, is_sha256_hex};
pub use check::{Check, CheckType, OnUnhealthy};
pub use constraint::{BUILTIN_ATTRIBUTES, Constraint, ConstraintOp, ConstraintValue};
pub use diff::{Change, diff};
pub use env::EnvValue;
pub use files::{MAX_FILE_BYTES, MAX_FILES_BYTES, TaskFile};
pub use ports::{Port, Protocol, port_env_name};
pub use spec::{
    DcLoss, Disconnect, JobSpec, JobType, MAX_COUNT, MAX_DATACENTERS, Resources, RestartMode,
    RestartPolicy, Runtime, TaskSpec, parse_duration, toml_to_json, validate_name,
};
pub use update::{
    Deployment, DeploymentPatch, DeploymentStatus, MAX_CANARY, UpdatePolicy, format_indexes,
    parse_indexes,
};

/// One problem in a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field (`task.resources.cpus`), or `spec` for the
    /// whole document.
    pub field: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A spec that cannot be accepted: every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SpecError {
    /// The problems, in field order. Never empty.
    pub errors: Vec<FieldError>,
}

impl SpecError {
    /// One problem.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            errors: vec![FieldError::new(field, message)],
        }
    }

    /// The field of the first problem.
    pub fn field(&self) -> &str {
        self.errors.first().map_or("spec", |e| e.field.as_str())
    }
}
