//! `options.schema.json`: what a person may set, its defaults, and the
//! checks that name the option and who is at fault.

use std::fmt;

use serde_json::{Map, Value};

/// Who must change something for an option to be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The options the person gave (a wrong type, an unknown or missing option).
    User,
    /// The package: its schema or its defaults (report it to the maintainer).
    Package,
}

/// One option that cannot be accepted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OptionProblem {
    /// JSON pointer of the option (`/replicas`, `/tls/cert`); empty for the
    /// options as a whole.
    pub path: String,
    /// Whose it is to fix.
    pub fault: Fault,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for OptionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "options"
        } else {
            &self.path
        };
        match self.fault {
            Fault::User => write!(f, "option {path}: {}", self.message),
            Fault::Package => write!(
                f,
                "option {path}: the package is at fault: {} (fix options.schema.json, or report it to the package's maintainer)",
                self.message
            ),
        }
    }
}

/// Options that cannot be accepted: every problem found. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct OptionsError {
    /// The problems, in the order found.
    pub problems: Vec<OptionProblem>,
}

impl OptionsError {
    fn one(path: impl Into<String>, fault: Fault, message: impl Into<String>) -> OptionsError {
        OptionsError {
            problems: vec![OptionProblem {
                path: path.into(),
                fault,
                message: message.into(),
            }],
        }
    }
}

/// A checked `options.schema.json`, compiled.
pub struct OptionsSchema {
    raw: Value,
    closed: Value,
    validator: jsonschema::Validator,
    defaults: Value,
}

impl fmt::Debug for OptionsSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionsSchema")
            .field("raw", &self.raw)
            .finish()
    }
}

impl OptionsSchema {
    /// Checks and compiles a schema: a JSON Schema (draft 2020-12 unless
    /// `$schema` says otherwise) for an object with `properties`. Objects
    /// with `properties` that do not say `additionalProperties` are closed
    /// (`false`): an unknown option is always refused. `$ref`s to other
    /// documents are not followed.
    pub fn new(raw: Value) -> Result<OptionsSchema, String> {
        let Value::Object(top) = &raw else {
            return Err("must be a JSON object (a JSON Schema)".into());
        };
        if top.get("type") != Some(&Value::String("object".into())) {
            return Err(r#"must say "type": "object": options are an object"#.into());
        }
        if !top.get("properties").is_some_and(Value::is_object) {
            return Err(r#"must have "properties": an object naming each option"#.into());
        }
        match top.get("additionalProperties") {
            None | Some(Value::Bool(false)) => {}
            Some(_) => {
                return Err(
                    r#""additionalProperties" must be false (or absent) at the top: unknown options are always refused"#
                        .into(),
                );
            }
        }
        if let Err(e) = jsonschema::meta::validate(&raw) {
            let at = e.instance_path().as_str().to_owned();
            return Err(format!(
                "is not a valid JSON Schema at {}: {e}",
                if at.is_empty() { "/" } else { &at }
            ));
        }
        let mut closed = raw.clone();
        close(&mut closed);
        let validator = jsonschema::validator_for(&closed)
            .map_err(|e| format!("cannot be compiled as a JSON Schema: {e}"))?;
        let defaults = defaults_of(&raw).unwrap_or_else(|| Value::Object(Map::new()));
        Ok(OptionsSchema {
            raw,
            closed,
            validator,
            defaults,
        })
    }

    /// The schema as written.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Every default, as one options object.
    pub fn defaults(&self) -> &Value {
        &self.defaults
    }

    /// The effective options: the defaults deep-merged with `user` (the
    /// user's value wins; objects merge key by key, anything else is
    /// replaced), then validated. `user` is not changed: keep it apart, so
    /// that an upgrade re-applies it over the new version's defaults.
    pub fn effective(&self, user: &Value) -> Result<Value, OptionsError> {
        let user_map = match user {
            Value::Object(m) => m,
            Value::Null => &Map::new(),
            other => {
                return Err(OptionsError::one(
                    "",
                    Fault::User,
                    format!(
                        "must be a JSON object of option names and values (got {})",
                        kind(other)
                    ),
                ));
            }
        };
        let user = Value::Object(user_map.clone());
        let mut problems = Vec::new();
        unknown_options(&self.closed, &user, "", &mut problems);
        let mut merged = self.defaults.clone();
        merge(&mut merged, &user);
        for e in self.validator.iter_errors(&merged) {
            let at = e.instance_path().as_str().to_owned();
            match e.kind() {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { .. } => {
                    // Reported above, with the option's path and the known ones.
                    if !problems.is_empty() {
                        continue;
                    }
                    problems.push(OptionProblem {
                        path: at,
                        fault: Fault::User,
                        message: e.to_string(),
                    });
                }
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_owned);
                    let path = format!("{at}/{}", escape_pointer(&name));
                    let set = path.trim_start_matches('/').replace('/', ".");
                    problems.push(OptionProblem {
                        path,
                        fault: Fault::User,
                        message: format!(
                            "is required and has no default: give it (--set {set}=VALUE, or in the options file)"
                        ),
                    });
                }
                _ => {
                    let users = given_by_user(&user, &at);
                    let value = merged.pointer(&at).map_or_else(String::new, |v| {
                        let mut s = v.to_string();
                        if s.len() > 80 {
                            s.truncate(77);
                            s.push_str("...");
                        }
                        s
                    });
                    let (fault, message) = if users {
                        (Fault::User, format!("your value {value} is refused: {e}"))
                    } else {
                        (
                            Fault::Package,
                            format!("its default {value} fails its own schema: {e}"),
                        )
                    };
                    problems.push(OptionProblem {
                        path: at,
                        fault,
                        message,
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(merged)
        } else {
            Err(OptionsError { problems })
        }
    }

    /// The schema of the option at `path` (`["tls", "cert"]`), if any.
    pub fn option_schema(&self, path: &[&str]) -> Option<&Value> {
        let mut s = &self.raw;
        for p in path {
            s = s.get("properties")?.get(*p)?;
        }
        Some(s)
    }

    /// Options that have no default and are not `required` (so an install
    /// without them renders templates with a missing variable), and
    /// `required` options (which every install must give), as JSON pointers.
    pub(crate) fn without_default(&self) -> (Vec<String>, Vec<String>) {
        let mut missing = Vec::new();
        let mut required = Vec::new();
        walk_defaults(&self.raw, "", &mut missing, &mut required);
        (missing, required)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Sets `additionalProperties: false` on every object schema with
/// `properties` that does not say otherwise.
fn close(schema: &mut Value) {
    match schema {
        Value::Object(m) => {
            if m.get("properties").is_some_and(Value::is_object)
                && !m.contains_key("additionalProperties")
                && !m.contains_key("patternProperties")
                && !m.contains_key("unevaluatedProperties")
            {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for v in m.values_mut() {
                close(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close),
        _ => {}
    }
}

/// The defaults an object schema gives: its own `default`, else one built
/// from its properties' defaults.
fn defaults_of(schema: &Value) -> Option<Value> {
    if let Some(d) = schema.get("default") {
        return Some(d.clone());
    }
    let props = schema.get("properties")?.as_object()?;
    let mut out = Map::new();
    for (k, p) in props {
        if let Some(d) = defaults_of(p) {
            out.insert(k.clone(), d);
        }
    }
    Some(Value::Object(out))
}

fn walk_defaults(schema: &Value, at: &str, missing: &mut Vec<String>, required: &mut Vec<String>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let req: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (k, p) in props {
        let path = format!("{at}/{}", escape_pointer(k));
        if p.get("default").is_some() {
            continue;
        }
        if req.contains(&k.as_str()) {
            required.push(path);
        } else if p.get("properties").is_some_and(Value::is_object) {
            walk_defaults(p, &path, missing, required);
        } else {
            missing.push(path);
        }
    }
}

/// Deep merge: objects key by key, anything else replaced by `over`.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Whether the user gave the value at `pointer`, or one of its parents
/// (other than the whole options object).
fn given_by_user(user: &Value, pointer: &str) -> bool {
    let mut at = String::new();
    for part in pointer.split('/').skip(1) {
        at.push('/');
        at.push_str(part);
        match user.pointer(&at) {
            None => return false,
            Some(Value::Object(_)) => {}
            Some(_) => return true,
        }
    }
    !at.is_empty()
}

fn unknown_options(schema: &Value, user: &Value, at: &str, out: &mut Vec<OptionProblem>) {
    let (Some(props), Value::Object(given)) =
        (schema.get("properties").and_then(Value::as_object), user)
    else {
        return;
    };
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (k, v) in given {
        let path = format!("{at}/{}", escape_pointer(k));
        match props.get(k) {
            Some(p) => unknown_options(p, v, &path, out),
            None if closed => {
                let known: Vec<&str> = props.keys().map(String::as_str).collect();
                let hint = closest(k, &known)
                    .map(|c| format!("did you mean {c:?}? "))
                    .unwrap_or_default();
                out.push(OptionProblem {
                    path,
                    fault: Fault::User,
                    message: format!(
                        "is not an option of this package: {hint}known here: {}",
                        known.join(", ")
                    ),
                });
            }
            None => {}
        }
    }
}

fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Applies one `--set a.b=VALUE` to `target` (an options object). The
/// value is JSON when it parses as JSON (`3`, `true`, `[1,2]`, `"x"`) and a
/// string otherwise — except when `schema` says the option is a string,
/// then it is always the string as written (so `--set tag=1.10` keeps
/// `"1.10"`).
pub fn apply_set(
    target: &mut Value,
    expr: &str,
    schema: Option<&OptionsSchema>,
) -> Result<(), String> {
    let (key, raw) = expr.split_once('=').ok_or_else(|| {
        format!("{expr:?} is not NAME=VALUE (e.g. replicas=3 or tls.enabled=true)")
    })?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "{expr:?}: {key:?} is not an option name (words separated by '.')"
        ));
    }
    let is_string = schema
        .and_then(|s| s.option_schema(&path))
        .and_then(|s| s.get("type"))
        .is_some_and(|t| t == "string");
    let value = if is_string {
        Value::String(raw.to_owned())
    } else {
        serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut cur = target;
    let (last, parents) = path.split_last().expect("split gives at least one part");
    for p in parents {
        let m = cur.as_object_mut().expect("made an object");
        let next = m
            .entry((*p).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        cur = next;
    }
    cur.as_object_mut()
        .expect("made an object")
        .insert((*last).to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> OptionsSchema {
        OptionsSchema::new(json!({
            "type": "object",
            "properties": {
                "replicas": {"type": "integer", "minimum": 0, "default": 2},
                "image": {"type": "string", "default": "redis:7"},
                "tag": {"type": "string", "default": "1.0"},
                "password": {"type": "string", "minLength": 1},
                "tls": {"type": "object", "properties": {
                    "enabled": {"type": "boolean", "default": false}
                }}
            },
            "required": ["password"]
        }))
        .unwrap()
    }

    #[test]
    fn defaults_merge_under_the_users_options() {
        let s = schema();
        let eff = s
            .effective(&json!({"password": "x", "tls": {"enabled": true}}))
            .unwrap();
        assert_eq!(
            eff,
            json!({"replicas": 2, "image": "redis:7", "tag": "1.0", "password": "x", "tls": {"enabled": true}})
        );
    }

    #[test]
    fn unknown_option_is_refused_with_its_path_and_a_hint() {
        let e = schema()
            .effective(&json!({"password": "x", "replica": 3}))
            .unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].path, "/replica");
        assert_eq!(e.problems[0].fault, Fault::User);
        assert!(e.to_string().contains("did you mean \"replicas\""), "{e}");
        let e = schema()
            .effective(&json!({"password": "x", "tls": {"on": true}}))
            .unwrap_err();
        assert_eq!(e.problems[0].path, "/tls/on", "{e}");
    }

    #[test]
    fn wrong_type_names_the_option_and_the_user() {
        let e = schema()
            .effective(&json!({"password": "x", "replicas": "three"}))
            .unwrap_err();
        assert_eq!(e.problems[0].path, "/replicas");
        assert_eq!(e.problems[0].fault, Fault::User);
        assert!(e.to_string().contains("your value \"three\""), "{e}");
    }

    #[test]
    fn missing_required_value_says_how_to_give_it() {
        let e = schema().effective(&json!({})).unwrap_err();
        assert_eq!(e.problems[0].path, "/password");
        assert!(e.to_string().contains("--set password="), "{e}");
    }

    #[test]
    fn a_default_failing_its_schema_is_the_packages_fault() {
        let s = OptionsSchema::new(json!({
            "type": "object",
            "properties": {"replicas": {"type": "integer", "minimum": 1, "default": 0}}
        }))
        .unwrap();
        let e = s.effective(&json!({})).unwrap_err();
        assert_eq!(e.problems[0].fault, Fault::Package);
        assert!(e.to_string().contains("the package is at fault"), "{e}");
        // The user's own value fixes it, and is then the one judged.
        assert!(s.effective(&json!({"replicas": 3})).is_ok());
    }

    #[test]
    fn schemas_that_cannot_work_are_refused() {
        assert!(OptionsSchema::new(json!([])).is_err());
        assert!(OptionsSchema::new(json!({"type": "object"})).is_err());
        let e = OptionsSchema::new(
            json!({"type": "object", "properties": {}, "additionalProperties": true}),
        )
        .unwrap_err();
        assert!(e.contains("additionalProperties"), "{e}");
        let e = OptionsSchema::new(json!({"type": "object", "properties": {"a": {"type": 5}}}))
            .unwrap_err();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
    }

    #[test]
    fn missing_defaults_are_listed() {
        let (missing, required) = schema().without_default();
        assert_eq!(required, vec!["/password"]);
        assert!(missing.is_empty());
        let s =
            OptionsSchema::new(json!({"type": "object", "properties": {"a": {"type": "string"}}}))
                .unwrap();
        assert_eq!(s.without_default().0, vec!["/a"]);
    }

    #[test]
    fn set_builds_nested_json_and_respects_string_options() {
        let s = schema();
        let mut v = json!({});
        apply_set(&mut v, "replicas=3", Some(&s)).unwrap();
        apply_set(&mut v, "tls.enabled=true", Some(&s)).unwrap();
        apply_set(&mut v, "tag=1.10", Some(&s)).unwrap();
        apply_set(&mut v, "other=hello world", Some(&s)).unwrap();
        assert_eq!(
            v,
            json!({"replicas": 3, "tls": {"enabled": true}, "tag": "1.10", "other": "hello world"})
        );
        assert!(apply_set(&mut v, "novalue", None).is_err());
        assert!(apply_set(&mut v, "a..b=1", None).is_err());
    }
}
