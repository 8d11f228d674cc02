//! `shoal acl bootstrap|policy …` and `shoal token create|list|show|revoke`:
//! who may do what through the API (`/v1/acl/…`). See docs/security.md.

use clap::Subcommand;
use serde_json::{Value, json};
use shoal_client::{Client, segment};
use shoal_model::acl::Rule;
use shoal_node::api::acl::{MadeTokenView, PolicyView, SelfView};
use shoal_state::AclToken;

use crate::output::table;

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Make the first management token, once per cluster, with the
    /// cluster token (--token, SHOAL_TOKEN). Print it and keep it: from
    /// then on the cluster token only admits machines, and every API call
    /// wants an ACL token.
    Bootstrap,
    /// Policies: named sets of rules that tokens carry.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Create or replace a policy.
    ///
    /// A rule is `RESOURCE[:PREFIX]=read|write`: `jobs:web/=write` (jobs
    /// whose name starts with web/), `jobs=read`, `packages=write`,
    /// `triggers=read`, `nodes=write` (drain), `secrets:db/=read`,
    /// `acl=write`. Write includes read.
    Create {
        /// Its name.
        name: String,
        /// A rule; repeat for more.
        #[arg(long = "rule", required = true, value_parser = Rule::parse)]
        rules: Vec<Rule>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the policies, built in (management, readonly) and stored.
    List,
    /// Show one policy.
    Show {
        /// Its name.
        name: String,
    },
    /// Delete a policy: the tokens that carry it lose its rules.
    Delete {
        /// Its name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once.
    Create {
        /// A policy it carries (built in: management, readonly); repeat
        /// for more.
        #[arg(long = "policy", required = true)]
        policies: Vec<String>,
        /// A name for people; it is recorded in the history of the jobs
        /// the token changes (default: token-ACCESSOR).
        #[arg(long)]
        name: Option<String>,
        /// It stops working after this long (24h, 30m, 7d); default: never.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List the tokens (never their secrets), revoked ones included.
    List,
    /// Show a token by accessor, or with none, the token you call with.
    Show {
        /// Its accessor (16 hex digits, from `token list`).
        accessor: Option<String>,
    },
    /// Revoke a token, for good: every node refuses it within seconds.
    Revoke {
        /// Its accessor (16 hex digits, from `token list`).
        accessor: String,
    },
}

/// Runs a `shoal acl` command.
pub fn acl(cmd: &AclCommand, client: &Client, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Bootstrap => {
            let made: MadeTokenView = client.post("/v1/acl/bootstrap", &Value::Null)?;
            if json_out {
                return crate::print_json(&made);
            }
            println!(
                "management token (shown once; keep it safe):\n\n    {}\n",
                made.token
            );
            println!("accessor {}, policy management", made.record.accessor);
            println!(
                "From now on the cluster token only admits machines: call with this token\n(export SHOAL_TOKEN=…), and make narrower ones with `shoal token create --policy …`."
            );
            Ok(())
        }
        AclCommand::Policy(PolicyCommand::Create {
            name,
            rules,
            description,
        }) => {
            let body = json!({ "name": name, "description": description, "rules": rules });
            let p: PolicyView = client.post("/v1/acl/policies", &body)?;
            if json_out {
                return crate::print_json(&p);
            }
            println!("policy {} saved: {}", p.name, rules_of(&p));
            Ok(())
        }
        AclCommand::Policy(PolicyCommand::List) => {
            let all: Vec<PolicyView> = client.get("/v1/acl/policies")?;
            if json_out {
                return crate::print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        rules_of(p),
                        if p.builtin {
                            "built in".into()
                        } else {
                            p.description.clone()
                        },
                    ]
                })
                .collect();
            print!("{}", table(&["NAME", "RULES", "DESCRIPTION"], &rows));
            Ok(())
        }
        AclCommand::Policy(PolicyCommand::Show { name }) => {
            let p: PolicyView = client.get(&format!("/v1/acl/policies/{}", segment(name)))?;
            if json_out {
                return crate::print_json(&p);
            }
            println!("name:        {}", p.name);
            println!("description: {}", p.description);
            println!("built in:    {}", p.builtin);
            println!("rules:");
            for r in &p.rules {
                println!("  {r}");
            }
            Ok(())
        }
        AclCommand::Policy(PolicyCommand::Delete { name }) => {
            let p: PolicyView = client.delete(&format!("/v1/acl/policies/{}", segment(name)))?;
            if json_out {
                return crate::print_json(&p);
            }
            println!(
                "policy {} deleted (tokens that carry it lost its rules)",
                p.name
            );
            Ok(())
        }
    }
}

fn rules_of(p: &PolicyView) -> String {
    p.rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a `shoal token` command.
pub fn token(cmd: &TokenCommand, client: &Client, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            policies,
            name,
            ttl,
        } => {
            let body = json!({ "name": name, "policies": policies, "ttl": ttl });
            let made: MadeTokenView = client.post("/v1/acl/tokens", &body)?;
            if json_out {
                return crate::print_json(&made);
            }
            println!("token (shown once; keep it safe):\n\n    {}\n", made.token);
            println!(
                "accessor {}, name {}, policies {}{}",
                made.record.accessor,
                made.record.name,
                made.record.policies.join(", "),
                made.record
                    .expires_at
                    .as_ref()
                    .map(|e| format!(", expires {e}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        TokenCommand::List => {
            let all: Vec<AclToken> = client.get("/v1/acl/tokens")?;
            if json_out {
                return crate::print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|t| {
                    vec![
                        t.accessor.clone(),
                        t.name.clone(),
                        t.policies.join(","),
                        state_of(t),
                        t.created_by.clone(),
                        t.created_at.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ACCESSOR", "NAME", "POLICIES", "STATE", "BY", "CREATED"],
                    &rows
                )
            );
            Ok(())
        }
        TokenCommand::Show { accessor: None } => {
            let me: SelfView = client.get("/v1/acl/token/self")?;
            if json_out {
                return crate::print_json(&me);
            }
            println!("name:     {}", me.name);
            println!("kind:     {}", me.kind);
            if let Some(a) = &me.accessor {
                println!("accessor: {a}");
            }
            println!("policies: {}", me.policies.join(", "));
            println!(
                "rules:    {}",
                me.rules
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            if !me.bootstrapped {
                println!(
                    "the ACLs are not bootstrapped: the cluster token authorizes everything (`shoal acl bootstrap`)"
                );
            }
            Ok(())
        }
        TokenCommand::Show {
            accessor: Some(accessor),
        } => {
            let t: AclToken = client.get(&format!("/v1/acl/tokens/{}", segment(accessor)))?;
            if json_out {
                return crate::print_json(&t);
            }
            println!("accessor: {}", t.accessor);
            println!("name:     {}", t.name);
            println!("policies: {}", t.policies.join(", "));
            println!("state:    {}", state_of(&t));
            println!("created:  {} by {}", t.created_at, t.created_by);
            Ok(())
        }
        TokenCommand::Revoke { accessor } => {
            let t: AclToken = client.delete(&format!("/v1/acl/tokens/{}", segment(accessor)))?;
            if json_out {
                return crate::print_json(&t);
            }
            println!(
                "token {} ({}) revoked; every node refuses it once the change reaches it (seconds)",
                t.accessor, t.name
            );
            Ok(())
        }
    }
}

fn state_of(t: &AclToken) -> String {
    if t.revoked {
        return format!("revoked {}", t.revoked_at.as_deref().unwrap_or_default());
    }
    match &t.expires_at {
        Some(e) => format!("expires {e}"),
        None => "active".into(),
    }
}
