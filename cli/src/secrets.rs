//! `shoal secret put|list|rm`: secrets that jobs refer to
//! (`env = { DB_PASSWORD = { secret = "db/password" } }`), through any
//! node's API (`/v1/secrets`). Values go in and never come out.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use shoal_client::{Client, segment};
use shoal_state::SecretRecord;

use crate::output::table;

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a secret, or replace its value. The value is read from
    /// --from-file (as is), else from standard input (one final newline
    /// dropped), never from the command line, so it stays out of shell
    /// history and `ps`. It is sealed by the node and never shown again.
    Put {
        /// Its name (`db/password`).
        name: String,
        /// Read the value from this file.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List the secrets you may read: names and dates, never values.
    List,
    /// Remove a secret: tasks that refer to it fail to start from then on
    /// (running ones keep their environment).
    Rm {
        /// Its name.
        name: String,
    },
}

/// Runs a `shoal secret` command.
pub fn run(cmd: &SecretCommand, client: &Client, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Put { name, from_file } => {
            let value = match from_file {
                Some(f) => std::fs::read_to_string(f).with_context(|| {
                    format!("could not read {} (a secret is UTF-8 text)", f.display())
                })?,
                None => {
                    let mut v = String::new();
                    std::io::stdin()
                        .read_to_string(&mut v)
                        .context("could not read the value from standard input (UTF-8 text)")?;
                    if v.ends_with('\n') {
                        v.pop();
                    }
                    v
                }
            };
            let r: SecretRecord =
                client.post("/v1/secrets", &json!({"name": name, "value": value}))?;
            if json_out {
                return crate::print_json(&r);
            }
            println!(
                "secret {} stored ({} bytes, sealed); refer to it with env = {{ VAR = {{ secret = \"{}\" }} }}",
                r.name,
                value.len(),
                r.name
            );
            Ok(())
        }
        SecretCommand::List => {
            let all: Vec<SecretRecord> = client.get("/v1/secrets")?;
            if json_out {
                return crate::print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.updated_at.clone(),
                        r.by.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print!("{}", table(&["NAME", "UPDATED", "BY"], &rows));
            Ok(())
        }
        SecretCommand::Rm { name } => {
            let r: SecretRecord = client.delete(&format!("/v1/secrets/{}", segment(name)))?;
            if json_out {
                return crate::print_json(&r);
            }
            println!("secret {} removed", r.name);
            Ok(())
        }
    }
}
