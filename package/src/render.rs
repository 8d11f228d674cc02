//! Rendering job templates into validated job specs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use minijinja::value::Value as MjValue;
use minijinja::{AutoEscape, Environment, Error as MjError, ErrorKind, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Value, json};
use shoal_model::JobSpec;

use crate::options::OptionsError;
use crate::tomlfmt::to_toml_value;

/// Label every rendered job carries: the installation's instance name.
pub const LABEL_INSTANCE: &str = "shoal.package.instance";
/// Label every rendered job carries: `<package>@<version>`.
pub const LABEL_PACKAGE: &str = "shoal.package";

/// One job rendered from one template.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RenderedJob {
    /// The template it came from (`jobs/primary.toml.j2`).
    pub template: String,
    /// The validated spec, with the package labels added.
    pub spec: JobSpec,
    /// The spec as a TOML job file (canonical: every default filled in,
    /// labels included): what is submitted, and what `tests/*.expected/`
    /// files are compared with.
    pub toml: String,
}

/// Why rendering failed. Nothing is rendered when any template fails.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// The instance name cannot name jobs.
    #[error("instance {instance:?}: {message}")]
    Instance {
        /// The name given.
        instance: String,
        /// What is wrong with it.
        message: String,
    },
    /// The options were refused.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A template failed to render (an undefined variable, a bad filter
    /// argument, a value TOML cannot hold).
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Template {
        /// The template (`jobs/primary.toml.j2`, `package.toml#notes.install`).
        file: String,
        /// Line in the template, when the template engine knows it.
        line: Option<usize>,
        /// What went wrong, with the expression at fault.
        message: String,
    },
    /// A template rendered, but not to a job shoal accepts.
    #[error("{file}: the rendered job is refused: {message}")]
    Job {
        /// The template.
        file: String,
        /// What is wrong (TOML syntax with the rendered line, a job field,
        /// the job name rule).
        message: String,
    },
}

/// The template environment of one package: strict undefined, and every
/// `{{ … }}` in a `.toml.j2` file written as a TOML value.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".toml.j2") {
            AutoEscape::Custom("toml".into())
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), AutoEscape::Custom(n) if n == "toml") && !value.is_safe() {
            let text = toml_of(value)?;
            out.write_str(&text)
                .map_err(|e| MjError::new(ErrorKind::WriteFailure, e.to_string()))
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env.add_filter("toml", |v: MjValue| -> Result<MjValue, MjError> {
        Ok(MjValue::from_safe_string(toml_of(&v)?))
    });
    env.add_filter("sh", |v: MjValue| -> Result<String, MjError> {
        let s = match v.as_str() {
            Some(s) => s.to_owned(),
            None => v.to_string(),
        };
        Ok(shell_quote(&s))
    });
    env.add_filter(
        "service_dns",
        |job: String, port: Option<String>| -> Result<String, MjError> {
            shoal_model::validate_name(&job).map_err(|e| {
                MjError::new(
                    ErrorKind::InvalidOperation,
                    format!("service_dns: job name {e}"),
                )
            })?;
            Ok(service_dns(&job, port.as_deref()))
        },
    );
    env
}

fn toml_of(value: &MjValue) -> Result<String, MjError> {
    let json = serde_json::to_value(value).map_err(|e| {
        MjError::new(
            ErrorKind::InvalidOperation,
            format!("cannot be written as TOML: {e}"),
        )
    })?;
    to_toml_value(&json).map_err(|e| MjError::new(ErrorKind::InvalidOperation, e))
}

/// `s` quoted for `/bin/sh`: one word, whatever it holds.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A job's DNS name: words reversed, `web/frontend` ->
/// `frontend.web.service.shoal`; with a port, its SRV name
/// `_http._tcp.frontend.web.service.shoal`.
pub fn service_dns(job: &str, port: Option<&str>) -> String {
    let mut words: Vec<&str> = job.split('/').collect();
    words.reverse();
    let name = format!("{}.service.shoal", words.join("."));
    match port {
        Some(p) => format!("_{}._tcp.{name}", p.to_ascii_lowercase()),
        None => name,
    }
}

/// The context every template sees.
pub(crate) fn context(instance: &str, options: &Value, m: &crate::Manifest) -> Value {
    json!({
        "options": options,
        "instance": instance,
        "package": {
            "name": m.name,
            "version": m.version.to_string(),
            "app_version": m.app_version.clone().unwrap_or_default(),
        },
    })
}

/// Turns a template engine error into a [`RenderError::Template`] naming
/// the template, its line and the expression at fault.
pub(crate) fn template_error(file: &str, e: &MjError) -> RenderError {
    let mut message = match e.kind() {
        ErrorKind::UndefinedError => "undefined value".to_owned(),
        _ => e.kind().to_string(),
    };
    if let Some(d) = e.detail() {
        let _ = write!(message, ": {d}");
    }
    if let (Some(src), Some(range)) = (e.template_source(), e.range())
        && let Some(expr) = src.get(range)
    {
        let _ = write!(message, " (in `{}`)", expr.trim());
    }
    if e.kind() == ErrorKind::UndefinedError {
        message.push_str(
            ": templates see `options` (the effective options), `instance` and `package` (name, version, app_version); check the spelling against options.schema.json",
        );
    }
    RenderError::Template {
        file: file.to_owned(),
        line: e.line(),
        message,
    }
}

/// Checks a rendered template and makes it a labelled, validated job.
pub(crate) fn to_job(
    file: &str,
    text: &str,
    instance: &str,
    package_label: &str,
) -> Result<RenderedJob, RenderError> {
    let err = |message: String| RenderError::Job {
        file: file.to_owned(),
        message,
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let mut m = format!("not valid TOML: {}", e.message());
        if let Some(span) = e.span() {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("");
            let _ = write!(
                m,
                " at rendered line {line_no}: `{}` (a value written inside quotes is quoted twice: write `key = {{{{ value }}}}`, not `key = \"{{{{ value }}}}\"`)",
                line.trim()
            );
        }
        err(m)
    })?;
    let mut json = serde_json::to_value(&table).map_err(|e| err(e.to_string()))?;
    let name = json
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if name != instance && !name.starts_with(&format!("{instance}/")) {
        return Err(err(format!(
            "name {name:?} is not under the instance {instance:?}: write name = {{{{ instance ~ \"/{}\" }}}} so that two instances never share a job",
            file.rsplit('/')
                .next()
                .unwrap_or(file)
                .trim_end_matches(".toml.j2")
        )));
    }
    // `after` names jobs of the same installation, relative to the
    // instance (`after = ["primary"]` is `<instance>/primary`).
    if let Some(Value::Array(after)) = json.get_mut("after") {
        for dep in after.iter_mut() {
            if let Value::String(d) = dep
                && !d.starts_with(&format!("{instance}/"))
            {
                *d = format!("{instance}/{d}");
            }
        }
    }
    let labels = json
        .as_object_mut()
        .expect("a TOML table")
        .entry("labels")
        .or_insert_with(|| json!({}));
    let Value::Object(labels) = labels else {
        return Err(err("labels must be a table of strings".into()));
    };
    for (k, v) in [(LABEL_INSTANCE, instance), (LABEL_PACKAGE, package_label)] {
        if let Some(old) = labels.get(k)
            && old != v
        {
            return Err(err(format!(
                "label {k:?} is set by shoal ({v:?}); remove it from the template"
            )));
        }
        labels.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let spec = JobSpec::from_json(json).map_err(|e| err(e.to_string()))?;
    let toml =
        toml::to_string(&spec).map_err(|e| err(format!("cannot be written as TOML: {e}")))?;
    Ok(RenderedJob {
        template: file.to_owned(),
        spec,
        toml,
    })
}

/// Every `after` names a job of the same installation.
pub(crate) fn check_after(jobs: &[RenderedJob], instance: &str) -> Result<(), RenderError> {
    let names: Vec<&str> = jobs.iter().map(|j| j.spec.name.as_str()).collect();
    for j in jobs {
        for dep in &j.spec.after {
            if !names.contains(&dep.as_str()) {
                let short = dep.strip_prefix(&format!("{instance}/")).unwrap_or(dep);
                return Err(RenderError::Job {
                    file: j.template.clone(),
                    message: format!(
                        "after names {short:?}, but the package renders no job {dep:?} (with these options): name one of {}",
                        names.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Job names rendered twice.
pub(crate) fn check_unique(jobs: &[RenderedJob]) -> Result<(), RenderError> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for j in jobs {
        if let Some(other) = seen.insert(&j.spec.name, &j.template) {
            return Err(RenderError::Job {
                file: j.template.clone(),
                message: format!(
                    "job name {:?} is also rendered by {other}: each template must name its own job",
                    j.spec.name
                ),
            });
        }
    }
    Ok(())
}
