//! A task's environment variables: a value, or a reference to a secret
//! (`env = { DB_PASSWORD = { secret = "db/password" } }`) that the node
//! starting the task decrypts into the variable. The spec, and so the API,
//! `job show` and the job's history, only ever hold the secret's name.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One variable's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum EnvValue {
    /// The value itself.
    Plain(String),
    /// The value of a secret (`shoal secret put NAME`).
    Secret {
        /// The secret's name.
        secret: String,
    },
}

impl EnvValue {
    /// The value when it is written in the spec.
    pub fn plain(&self) -> Option<&str> {
        match self {
            EnvValue::Plain(v) => Some(v),
            EnvValue::Secret { .. } => None,
        }
    }

    /// The secret it refers to, if it does.
    pub fn secret(&self) -> Option<&str> {
        match self {
            EnvValue::Secret { secret } => Some(secret),
            EnvValue::Plain(_) => None,
        }
    }

    /// Reads a job file's or body's value: a string, or `{ secret = NAME }`.
    pub(crate) fn from_value(v: Value) -> Result<EnvValue, String> {
        match v {
            Value::String(s) => Ok(EnvValue::Plain(s)),
            Value::Object(m) if m.len() == 1 && m.contains_key("secret") => match &m["secret"] {
                Value::String(name) => {
                    crate::validate_name(name).map_err(|e| format!("secret: {e}"))?;
                    Ok(EnvValue::Secret {
                        secret: name.clone(),
                    })
                }
                other => Err(format!("secret: a secret's name is a string (got {other})")),
            },
            other => Err(format!(
                "a value is a string, or {{ secret = \"NAME\" }} for a secret's (got {other})"
            )),
        }
    }
}

impl From<String> for EnvValue {
    fn from(s: String) -> EnvValue {
        EnvValue::Plain(s)
    }
}

impl From<&str> for EnvValue {
    fn from(s: &str) -> EnvValue {
        EnvValue::Plain(s.to_owned())
    }
}

impl PartialEq<&str> for EnvValue {
    fn eq(&self, other: &&str) -> bool {
        self.plain() == Some(*other)
    }
}
