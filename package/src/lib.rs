//! Packages: installable software as a manifest, an options schema and job
//! templates.
//!
//! A package is a directory (or a `.tar.gz` of one):
//!
//! - `package.toml` — the [`Manifest`] (name, version, description, …);
//! - `options.schema.json` — a JSON Schema of the options
//!   ([`OptionsSchema`]); every option has a default, except those listed
//!   in `required`, and unknown options are always refused;
//! - `jobs/*.toml.j2` — one shoal job per template (minijinja, strict
//!   undefined), every `{{ … }}` written as a TOML value;
//! - `tests/<case>.json` with `tests/<case>.expected/<job>.toml` — option
//!   files and the jobs they must render to, checked by [`lint`].
//!
//! [`Package::from_files`] loads one from an in-memory map of files;
//! [`Package::render`] turns an instance name and the user's options into
//! validated [`shoal_model::JobSpec`]s named under the instance and labelled
//! with it. [`library`] holds the packages compiled into the binary;
//! [`archive`] packs and unpacks `.tar.gz` bytes.
//!
//! Pure: no clock, no sockets, no filesystem, except the `fs` module behind
//! the `fs` feature.

pub mod archive;
#[cfg(feature = "fs")]
pub mod fs;
pub mod library;
mod lint;
mod manifest;
mod options;
mod render;
mod tomlfmt;

use std::collections::BTreeMap;

use minijinja::Environment;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use lint::{Level, LintFinding, lint};
pub use manifest::{Manifest, Notes};
pub use options::{Fault, OptionProblem, OptionsError, OptionsSchema, apply_set, merge};
pub use render::{
    LABEL_INSTANCE, LABEL_PACKAGE, RenderError, RenderedJob, service_dns, shell_quote,
};
pub use semver;
pub use tomlfmt::to_toml_value;

/// The files of a package: relative path (`jobs/web.toml.j2`, `/`-separated)
/// to contents.
pub type Files = BTreeMap<String, Vec<u8>>;

/// The manifest's file.
pub const MANIFEST_FILE: &str = "package.toml";
/// The options schema's file.
pub const SCHEMA_FILE: &str = "options.schema.json";
const JOBS_DIR: &str = "jobs/";
const TEMPLATE_SUFFIX: &str = ".toml.j2";
/// Config files, rendered (`*.j2`) or as they are.
const FILES_DIR: &str = "files/";

/// A package that cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PackageError {
    /// The file at fault (`package.toml`, `jobs/web.toml.j2`), or `package`.
    pub file: String,
    /// Its line, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl PackageError {
    pub(crate) fn new(file: impl Into<String>, message: impl Into<String>) -> PackageError {
        PackageError {
            file: file.into(),
            line: None,
            message: message.into(),
        }
    }
}

/// A loaded package: its manifest parsed, its schema compiled and its
/// templates parsed. Rendering never reads anything else.
pub struct Package {
    manifest: Manifest,
    schema: OptionsSchema,
    templates: BTreeMap<String, String>,
    /// Config files (`files/…`): the name job templates see them by
    /// (`redis.conf`) to the file (`files/redis.conf.j2`, rendered, or
    /// `files/redis.conf`, as is).
    configs: BTreeMap<String, String>,
    files: Files,
    env: Environment<'static>,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("manifest", &self.manifest)
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A template of `path` that does not parse: its line and what is wrong.
fn syntax_error(path: &str, e: &minijinja::Error) -> PackageError {
    PackageError {
        file: path.to_owned(),
        line: e.line(),
        message: format!(
            "template syntax: {}",
            e.detail()
                .map_or_else(|| e.kind().to_string(), str::to_owned)
        ),
    }
}

fn text<'a>(files: &'a Files, path: &str) -> Result<&'a str, PackageError> {
    let bytes = files.get(path).ok_or_else(|| {
        PackageError::new(
            path,
            "is missing: a package needs package.toml, options.schema.json and jobs/*.toml.j2",
        )
    })?;
    std::str::from_utf8(bytes)
        .map_err(|e| PackageError::new(path, format!("is not UTF-8 text: {e}")))
}

impl Package {
    /// Loads a package from its files. Checks the manifest, compiles the
    /// options schema and parses every template; refuses a package with no
    /// job template. Does not render (see [`lint`] for that).
    pub fn from_files(files: Files) -> Result<Package, PackageError> {
        for path in files.keys() {
            archive::check_path(path).map_err(|m| PackageError::new(path.clone(), m))?;
        }
        let manifest = Manifest::from_toml(text(&files, MANIFEST_FILE)?)
            .map_err(|m| PackageError::new(MANIFEST_FILE, m))?;
        let schema_json: Value =
            serde_json::from_str(text(&files, SCHEMA_FILE)?).map_err(|e| PackageError {
                file: SCHEMA_FILE.into(),
                line: Some(e.line()),
                message: format!("not valid JSON: {e}"),
            })?;
        let schema =
            OptionsSchema::new(schema_json).map_err(|m| PackageError::new(SCHEMA_FILE, m))?;
        let mut env = render::environment();
        let mut templates = BTreeMap::new();
        for (path, _) in files.range(JOBS_DIR.to_owned()..) {
            if !path.starts_with(JOBS_DIR) {
                break;
            }
            if !path.ends_with(TEMPLATE_SUFFIX) || path[JOBS_DIR.len()..].contains('/') {
                continue;
            }
            let source = text(&files, path)?.to_owned();
            env.add_template_owned(path.clone(), source.clone())
                .map_err(|e| syntax_error(path, &e))?;
            templates.insert(path.clone(), source);
        }
        let mut configs = BTreeMap::new();
        for (path, _) in files.range(FILES_DIR.to_owned()..) {
            if !path.starts_with(FILES_DIR) {
                break;
            }
            let name = &path[FILES_DIR.len()..];
            if let Some(name) = name.strip_suffix(".j2") {
                let source = text(&files, path)?.to_owned();
                env.add_template_owned(path.clone(), source)
                    .map_err(|e| syntax_error(path, &e))?;
                configs.insert(name.to_owned(), path.clone());
            } else if !configs.contains_key(name) && std::str::from_utf8(&files[path]).is_ok() {
                // A binary file is carried, not offered to templates.
                configs.insert(name.to_owned(), path.clone());
            }
        }
        if templates.is_empty() {
            return Err(PackageError::new(
                "jobs/",
                "has no job template: add jobs/<job>.toml.j2, one shoal job each",
            ));
        }
        for (which, note) in [
            ("install", &manifest.notes.install),
            ("uninstall", &manifest.notes.uninstall),
        ] {
            if let Some(n) = note {
                env.add_template_owned(format!("{MANIFEST_FILE}#notes.{which}"), n.clone())
                    .map_err(|e| {
                        PackageError::new(
                            MANIFEST_FILE,
                            format!("notes.{which}: template syntax: {e}"),
                        )
                    })?;
            }
        }
        Ok(Package {
            manifest,
            schema,
            templates,
            configs,
            files,
            env,
        })
    }

    /// `package.toml`.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// `options.schema.json`, compiled.
    pub fn options_schema(&self) -> &OptionsSchema {
        &self.schema
    }

    /// The job templates: path (`jobs/primary.toml.j2`) to source.
    pub fn templates(&self) -> &BTreeMap<String, String> {
        &self.templates
    }

    /// Every file of the package, as loaded.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// `name@version`, as in the [`LABEL_PACKAGE`] label.
    pub fn id(&self) -> String {
        format!("{}@{}", self.manifest.name, self.manifest.version)
    }

    /// `sha256:<hex>` of the package's files (paths and contents), the same
    /// whichever archive or directory they came from.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (path, data) in &self.files {
            h.update((path.len() as u64).to_be_bytes());
            h.update(path.as_bytes());
            h.update((data.len() as u64).to_be_bytes());
            h.update(data);
        }
        let mut out = String::from("sha256:");
        for b in h.finalize().iter() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The effective options: the schema's defaults deep-merged with the
    /// user's options, validated. Keep `user` apart: it is what an upgrade
    /// re-applies over the next version's defaults.
    pub fn effective_options(&self, user: &Value) -> Result<Value, OptionsError> {
        self.schema.effective(user)
    }

    /// Renders every job template for `instance` (a job name, e.g. `r1` or
    /// `team/r1`) with the user's options. Each job must be named
    /// `instance` or `instance/…`; each gets the labels
    /// [`LABEL_INSTANCE`] and [`LABEL_PACKAGE`]. All or nothing: the first
    /// failure is returned.
    pub fn render(
        &self,
        instance: &str,
        user_options: &Value,
    ) -> Result<Vec<RenderedJob>, RenderError> {
        shoal_model::validate_name(instance).map_err(|message| RenderError::Instance {
            instance: instance.to_owned(),
            message,
        })?;
        let options = self.effective_options(user_options)?;
        let mut ctx = render::context(instance, &options, &self.manifest);
        ctx["files"] = self.render_configs(&ctx)?;
        let label = self.id();
        let mut jobs = Vec::new();
        for path in self.templates.keys() {
            let tmpl = self
                .env
                .get_template(path)
                .map_err(|e| render::template_error(path, &e))?;
            let text = tmpl
                .render(minijinja::value::Serde(&ctx))
                .map_err(|e| render::template_error(path, &e))?;
            jobs.push(render::to_job(path, &text, instance, &label)?);
        }
        render::check_unique(&jobs)?;
        render::check_after(&jobs, instance)?;
        Ok(jobs)
    }

    /// The config files (`files/…`) with `ctx`: name to text, what job
    /// templates see as `files` (`{{ files["redis.conf"] }}`, written
    /// into the task's sandbox with `[[task.files]]`).
    fn render_configs(&self, ctx: &Value) -> Result<Value, RenderError> {
        let mut out = serde_json::Map::new();
        for (name, path) in &self.configs {
            let text = if path.ends_with(".j2") {
                let tmpl = self
                    .env
                    .get_template(path)
                    .map_err(|e| render::template_error(path, &e))?;
                let mut text = tmpl
                    .render(minijinja::value::Serde(ctx))
                    .map_err(|e| render::template_error(path, &e))?;
                // The engine drops a template's last newline; a config
                // file keeps the one its source ends with.
                if self.files[path].ends_with(b"\n") && !text.ends_with('\n') {
                    text.push('\n');
                }
                text
            } else {
                String::from_utf8_lossy(&self.files[path]).into_owned()
            };
            out.insert(name.clone(), Value::String(text));
        }
        Ok(Value::Object(out))
    }

    /// The install (`uninstall = false`) or uninstall notes, rendered with
    /// the same context as the jobs; `None` when the package has none.
    pub fn notes(
        &self,
        instance: &str,
        user_options: &Value,
        uninstall: bool,
    ) -> Result<Option<String>, RenderError> {
        let which = if uninstall { "uninstall" } else { "install" };
        let name = format!("{MANIFEST_FILE}#notes.{which}");
        let Ok(tmpl) = self.env.get_template(&name) else {
            return Ok(None);
        };
        let options = self.effective_options(user_options)?;
        let ctx = render::context(instance, &options, &self.manifest);
        tmpl.render(minijinja::value::Serde(&ctx))
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|e| render::template_error(&name, &e))
    }
}

#[cfg(test)]
mod tests;
