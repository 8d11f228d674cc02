//! Access control: what a token may read and change.
//!
//! A policy is a named list of rules; a token carries policies. A rule
//! grants `read` or `write` (which includes read) on one kind of resource:
//! `jobs` and `secrets` by name prefix (`jobs:web/=write`: every job whose
//! name starts with `web/`; no prefix: all of them), `packages` (the
//! library, repositories and installations), `triggers` (and their runs),
//! `nodes` (members, status, metrics; write: drain) and `acl` (policies and
//! tokens). Two policies are built in: `management` (write on everything)
//! and `readonly` (read on jobs, packages, triggers and nodes; neither
//! secrets nor acl). See docs/security.md.

use serde::{Deserialize, Serialize};

/// The built-in policy that grants everything.
pub const MANAGEMENT: &str = "management";
/// The built-in policy that reads everything but secrets and ACLs.
pub const READONLY: &str = "readonly";

/// What a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Jobs (by name prefix), their tasks, logs, services and deployments.
    Jobs,
    /// The package library, repositories, installations and artifacts.
    Packages,
    /// Triggers and their runs.
    Triggers,
    /// Members, status, summary and metrics; write: drain.
    Nodes,
    /// Secrets (by name prefix).
    Secrets,
    /// Policies and tokens.
    Acl,
}

impl Resource {
    /// Every resource, in the order they are shown.
    pub const ALL: [Resource; 6] = [
        Resource::Jobs,
        Resource::Packages,
        Resource::Triggers,
        Resource::Nodes,
        Resource::Secrets,
        Resource::Acl,
    ];

    /// Its name in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Jobs => "jobs",
            Resource::Packages => "packages",
            Resource::Triggers => "triggers",
            Resource::Nodes => "nodes",
            Resource::Secrets => "secrets",
            Resource::Acl => "acl",
        }
    }

    /// Whether its rules take a name prefix.
    pub fn prefixed(self) -> bool {
        matches!(self, Resource::Jobs | Resource::Secrets)
    }

    fn parse(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Read, or read and change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read.
    Read,
    /// Read and change.
    Write,
}

impl Access {
    /// `read` or `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One grant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rule {
    /// What it is about.
    pub resource: Resource,
    /// For `jobs` and `secrets`: the names it covers start with this
    /// (empty: all).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// What it allows.
    pub access: Access,
}

impl Rule {
    /// Parses `RESOURCE[:PREFIX]=ACCESS` (`jobs:web/=write`, `nodes=read`).
    pub fn parse(s: &str) -> Result<Rule, String> {
        let help = "a rule is RESOURCE[:PREFIX]=read|write, e.g. jobs:web/=write or nodes=read; resources: jobs, packages, triggers, nodes, secrets, acl (a prefix only for jobs and secrets)";
        let Some((what, access)) = s.trim().rsplit_once('=') else {
            return Err(format!("{s:?}: no `=`; {help}"));
        };
        let access = match access.trim() {
            "read" => Access::Read,
            "write" => Access::Write,
            other => return Err(format!("{s:?}: unknown access {other:?}; {help}")),
        };
        let (resource, prefix) = what.split_once(':').unwrap_or((what, ""));
        let Some(resource) = Resource::parse(resource.trim()) else {
            return Err(format!("{s:?}: unknown resource {resource:?}; {help}"));
        };
        let rule = Rule {
            resource,
            prefix: prefix.to_owned(),
            access,
        };
        rule.validate().map(|()| rule)
    }

    /// Checks that a prefix is given only where names are.
    pub fn validate(&self) -> Result<(), String> {
        if !self.prefix.is_empty() && !self.resource.prefixed() {
            return Err(format!(
                "{}: a prefix applies only to jobs and secrets, not to {}",
                self,
                self.resource.as_str()
            ));
        }
        Ok(())
    }

    fn covers(&self, resource: Resource, name: &str, access: Access) -> bool {
        self.resource == resource && self.access >= access && name.starts_with(&self.prefix)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.resource.as_str())?;
        if !self.prefix.is_empty() {
            write!(f, ":{}", self.prefix)?;
        }
        write!(f, "={}", self.access.as_str())
    }
}

/// A named set of rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    /// Its name (`web-deploy`).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// What it grants.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// A built-in policy by name.
    pub fn builtin(name: &str) -> Option<Policy> {
        let all = |access: Access, resources: &[Resource]| {
            resources
                .iter()
                .map(|&resource| Rule {
                    resource,
                    prefix: String::new(),
                    access,
                })
                .collect()
        };
        match name {
            MANAGEMENT => Some(Policy {
                name: MANAGEMENT.into(),
                description: "everything (built in)".into(),
                rules: all(Access::Write, &Resource::ALL),
            }),
            READONLY => Some(Policy {
                name: READONLY.into(),
                description: "read jobs, packages, triggers and nodes (built in)".into(),
                rules: all(
                    Access::Read,
                    &[
                        Resource::Jobs,
                        Resource::Packages,
                        Resource::Triggers,
                        Resource::Nodes,
                    ],
                ),
            }),
            _ => None,
        }
    }

    /// Checks its name and rules.
    pub fn validate(&self) -> Result<(), (String, String)> {
        crate::validate_name(&self.name).map_err(|e| ("name".to_owned(), e))?;
        if Policy::builtin(&self.name).is_some() {
            return Err((
                "name".into(),
                format!(
                    "{:?} is a built-in policy and cannot be changed: choose another name",
                    self.name
                ),
            ));
        }
        if self.rules.is_empty() {
            return Err((
                "rules".into(),
                "a policy needs at least one rule (RESOURCE[:PREFIX]=read|write)".into(),
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            r.validate().map_err(|e| (format!("rules[{i}]"), e))?;
        }
        Ok(())
    }
}

/// What a caller may do: the union of its policies' rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    rules: Vec<Rule>,
}

impl Grants {
    /// Everything.
    pub fn all() -> Grants {
        Grants {
            rules: Policy::builtin(MANAGEMENT)
                .map(|p| p.rules)
                .unwrap_or_default(),
        }
    }

    /// The union of these rules.
    pub fn of(rules: impl IntoIterator<Item = Rule>) -> Grants {
        Grants {
            rules: rules.into_iter().collect(),
        }
    }

    /// Whether `access` on `resource` named `name` is allowed (`name` is
    /// empty for resources without names).
    pub fn allows(&self, resource: Resource, name: &str, access: Access) -> bool {
        self.rules.iter().any(|r| r.covers(resource, name, access))
    }

    /// Whether `access` on some of `resource` is allowed (a list that the
    /// handler then filters, or a write whose name is in the body).
    pub fn allows_some(&self, resource: Resource, access: Access) -> bool {
        self.rules
            .iter()
            .any(|r| r.resource == resource && r.access >= access)
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for s in [
            "jobs:web/=write",
            "nodes=read",
            "secrets:db/=read",
            "acl=write",
        ] {
            assert_eq!(Rule::parse(s).unwrap().to_string(), s);
        }
        assert!(Rule::parse("jobs").unwrap_err().contains("no `=`"));
        assert!(
            Rule::parse("job=read")
                .unwrap_err()
                .contains("unknown resource")
        );
        assert!(
            Rule::parse("jobs=admin")
                .unwrap_err()
                .contains("unknown access")
        );
        assert!(
            Rule::parse("nodes:x=read")
                .unwrap_err()
                .contains("only to jobs and secrets")
        );
    }

    #[test]
    fn a_prefix_limits_jobs_and_write_includes_read() {
        let g = Grants::of([Rule::parse("jobs:web/=write").unwrap()]);
        assert!(g.allows(Resource::Jobs, "web/a", Access::Write));
        assert!(g.allows(Resource::Jobs, "web/a", Access::Read));
        assert!(!g.allows(Resource::Jobs, "db/a", Access::Read));
        assert!(!g.allows(Resource::Nodes, "", Access::Read));
        assert!(g.allows_some(Resource::Jobs, Access::Write));
        let ro = Grants::of(Policy::builtin(READONLY).unwrap().rules);
        assert!(ro.allows(Resource::Jobs, "db/a", Access::Read));
        assert!(!ro.allows(Resource::Jobs, "db/a", Access::Write));
        assert!(!ro.allows_some(Resource::Secrets, Access::Read));
        assert!(Grants::all().allows(Resource::Acl, "", Access::Write));
    }

    #[test]
    fn built_in_names_are_refused_and_rules_are_needed() {
        let p = |name: &str, rules: Vec<Rule>| Policy {
            name: name.into(),
            description: String::new(),
            rules,
        };
        assert_eq!(p(MANAGEMENT, vec![]).validate().unwrap_err().0, "name");
        assert_eq!(p("ops", vec![]).validate().unwrap_err().0, "rules");
        assert!(
            p("ops", vec![Rule::parse("nodes=write").unwrap()])
                .validate()
                .is_ok()
        );
    }
}
