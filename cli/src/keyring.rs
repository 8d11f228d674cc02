//! `shoal keyring list|install|use|remove`: rotating the key gossip is
//! sealed with, with no downtime (docs/security.md, "Gossip key
//! rotation"): install a key (every node then opens datagrams sealed with
//! it), use it once every live member holds it, remove the old one once
//! no live member seals with it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use shoal_client::{Client, segment};
use shoal_node::api::keyring::{InstalledView, KeyringView};

use crate::output::table;

#[derive(Subcommand, Debug)]
pub enum KeyringCommand {
    /// The keys, and how many live members hold and seal with each.
    List,
    /// Install a key: a fresh random one (printed once: keep it, a node
    /// that misses the rotation while down needs it), or the one in
    /// --key-file (32 bytes, base64, as printed).
    Install {
        /// Read the key from this file instead of drawing one.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Seal gossip with a key (refused until every live member holds it).
    Use {
        /// The key's id (8 hex digits, from `keyring list`).
        id: String,
    },
    /// Remove a key for good (refused while a live member seals with it).
    Remove {
        /// The key's id.
        id: String,
    },
}

/// Runs a `shoal keyring` command.
pub fn run(cmd: &KeyringCommand, client: &Client, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        KeyringCommand::List => {
            let k: KeyringView = client.get("/v1/keyring")?;
            if json_out {
                return crate::print_json(&k);
            }
            let rows: Vec<Vec<String>> = k
                .keys
                .iter()
                .map(|x| {
                    vec![
                        x.id.clone(),
                        if x.primary { "yes" } else { "-" }.into(),
                        format!("{}/{}", x.held_by, k.members),
                        format!("{}/{}", x.sealing, k.members),
                        if x.cluster_key {
                            "the cluster secret's".into()
                        } else {
                            x.installed_at.clone().unwrap_or_default()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["ID", "CHOSEN", "HELD BY", "SEALING", "INSTALLED"], &rows)
            );
            Ok(())
        }
        KeyringCommand::Install { key_file } => {
            let body = match key_file {
                Some(f) => {
                    let key = std::fs::read_to_string(f)
                        .with_context(|| format!("could not read {}", f.display()))?;
                    json!({"key": key.trim()})
                }
                None => json!({}),
            };
            let r: InstalledView = client.post("/v1/keyring", &body)?;
            if json_out {
                return crate::print_json(&r);
            }
            println!(
                "key {} installed; `shoal keyring use {}` once `keyring list` shows it held by all",
                r.id, r.id
            );
            if let Some(k) = r.key {
                println!("the key (keep it; shown once): {k}");
            }
            Ok(())
        }
        KeyringCommand::Use { id } => {
            let r: Value = client.post(&format!("/v1/keyring/{}/use", segment(id)), &json!({}))?;
            if json_out {
                return crate::print_json(&r);
            }
            println!(
                "gossip is sealed with key {id} as the change reaches each node; remove the old key once `keyring list` shows no one sealing with it"
            );
            Ok(())
        }
        KeyringCommand::Remove { id } => {
            let r: Value = client.delete(&format!("/v1/keyring/{}", segment(id)))?;
            if json_out {
                return crate::print_json(&r);
            }
            println!("key {id} removed");
            Ok(())
        }
    }
}
