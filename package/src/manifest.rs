//! `package.toml`: what a package is.

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

/// The contents of `package.toml`. Unknown keys are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Name: one lower-case word of letters, digits and `-` (`redis`,
    /// `node-exporter`), 1–63 characters.
    pub name: String,
    /// The package's own version (semver): bumped whenever its templates,
    /// options or defaults change.
    pub version: Version,
    /// Version of the software it runs (`7.0`), free-form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// One paragraph: what it runs.
    pub description: String,
    /// Search words.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Who looks after the package (`Name <mail>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainer: Option<String>,
    /// SPDX licence of the package (not of the software).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Installations of which versions may be upgraded to this one
    /// (a semver requirement, `>=1.0, <2`). Absent: any older version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrades_from: Option<VersionReq>,
    /// Text shown after install and uninstall, templated with the options.
    #[serde(default)]
    pub notes: Notes,
    /// Checked to really run on shoal by a test (not only linted).
    #[serde(default)]
    pub verified: bool,
    /// What a node needs for the package's tasks (`java`, `redis-server`):
    /// documentation for operators; not enforced yet.
    #[serde(default)]
    pub requires: Vec<String>,
}

/// Notes shown to the person who installs or uninstalls. Templated
/// (minijinja, no TOML escaping) with the same context as the jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notes {
    /// After an install (how to reach it, what to do next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
    /// After an uninstall (what is left behind, e.g. data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninstall: Option<String>,
}

/// Checks one lower-case word: letters, digits and `-` inside, 1–63 long.
pub(crate) fn check_word(word: &str) -> Result<(), String> {
    let ok = !word.is_empty()
        && word.len() <= 63
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !word.starts_with('-')
        && !word.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{word:?} is not a valid name: use 1-63 lower-case letters, digits and '-' (not at either end)"
        ))
    }
}

impl Manifest {
    /// Parses and checks `package.toml`.
    pub fn from_toml(text: &str) -> Result<Manifest, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            msg.trim().replace('\n', " ")
        })?;
        check_word(&m.name).map_err(|e| format!("name: {e}"))?;
        if m.description.trim().is_empty() {
            return Err(
                "description: must not be empty: say in a sentence what the package runs".into(),
            );
        }
        for r in &m.requires {
            if r.trim().is_empty() {
                return Err("requires: an entry is empty".into());
            }
        }
        Ok(m)
    }

    /// Whether an installation of `from` may be upgraded to this version:
    /// `upgrades_from` when given, else any older or equal version.
    pub fn can_upgrade_from(&self, from: &Version) -> bool {
        match &self.upgrades_from {
            Some(req) => req.matches(from),
            None => from <= &self.version,
        }
    }

    /// [`can_upgrade_from`](Self::can_upgrade_from) for an installation
    /// at version `from` (as the replicated state holds it), with the
    /// message that says why not and what to do.
    pub fn check_upgrade_from(&self, from: &str) -> Result<(), String> {
        let Ok(v) = Version::parse(from) else {
            // An installation whose version is not semver (a local
            // package of old) is not held back.
            return Ok(());
        };
        if self.can_upgrade_from(&v) {
            return Ok(());
        }
        let why = match &self.upgrades_from {
            Some(req) => format!("it upgrades only from versions {req} (its upgrades_from)"),
            None => "it is older: going back is `shoal package rollback`".to_owned(),
        };
        Err(format!(
            "{} {} cannot upgrade an installation of {from}: {why}; pick another version, or uninstall and install",
            self.name, self.version
        ))
    }
}
