//! Who is calling the API, and what they may do.
//!
//! An ACL token is `shoalt1_<accessor>_<secret>`: the accessor (16 hex
//! digits) is public and names the token in lists and revocations; the
//! secret (32 random bytes, base64url) is shown once, when the token is
//! made. The replicated state holds the SHA-256 of the whole token string,
//! never the token. Every node keeps an [`AclTable`] of the tokens and
//! policies it knows, rebuilt by the state task when one changes (locally
//! or from a peer), so checking a request is a map lookup, a hash and a
//! constant-time comparison: no round trip to the state task.
//!
//! The cluster secret admits machines. Until `acl bootstrap` has made the
//! first token it also authorizes every API call (a cluster that never
//! turns ACLs on works as before); once bootstrapped it authorizes only
//! `acl bootstrap` (refused then) and the routes agents call on each other
//! (artifact blobs). See docs/security.md.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use shoal_gossip::NodeId;
use shoal_model::acl::{Access, Grants, Policy, Resource};
use shoal_state::{AclToken, Store, is_accessor};
use subtle::ConstantTimeEq;

use crate::blobs::Digest;

const PREFIX: &str = "shoalt1_";

/// A token just made: what to hand out once, and what to store.
#[derive(Clone, Debug)]
pub struct MadeToken {
    /// Its public id.
    pub accessor: String,
    /// The whole token, shown once.
    pub token: String,
    /// SHA-256 of `token`, hex: what the replica stores.
    pub sha256: String,
}

/// Draws a new token.
pub fn make_token() -> Result<MadeToken, getrandom::Error> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    let accessor = format!("{:016x}", u64::from_be_bytes(id));
    let token = format!("{PREFIX}{accessor}_{}", URL_SAFE_NO_PAD.encode(secret));
    let sha256 = Digest::of(token.as_bytes()).hex();
    Ok(MadeToken {
        accessor,
        token,
        sha256,
    })
}

/// The accessor of an ACL token, if `token` has that form.
pub fn accessor_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (accessor, secret) = rest.split_at_checked(16)?;
    (is_accessor(accessor) && secret.starts_with('_') && secret.len() > 1).then_some(accessor)
}

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name (`--dev`, `cluster-secret`, or an ACL token's).
    pub name: String,
    /// The ACL token's accessor.
    pub accessor: Option<String>,
    /// Its policies (empty for the dev mode and the cluster secret).
    pub policies: Vec<String>,
    /// What it may do.
    pub grants: Grants,
    /// How it authenticated.
    pub kind: CallerKind,
}

/// How a caller authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerKind {
    /// `--dev`: no authentication.
    Dev,
    /// The cluster secret.
    ClusterSecret,
    /// An ACL token.
    Token,
}

impl Caller {
    /// `--dev`: everything.
    pub fn dev() -> Caller {
        Caller {
            name: "dev".into(),
            accessor: None,
            policies: Vec::new(),
            grants: Grants::all(),
            kind: CallerKind::Dev,
        }
    }

    /// The cluster secret (before the bootstrap: everything).
    pub fn cluster_secret() -> Caller {
        Caller {
            name: "cluster-secret".into(),
            accessor: None,
            policies: Vec::new(),
            grants: Grants::all(),
            kind: CallerKind::ClusterSecret,
        }
    }

    /// The name a job's history records for its writes: an ACL token's
    /// (none for `--dev` and the cluster secret).
    pub fn history_name(&self) -> Option<String> {
        (self.kind == CallerKind::Token).then(|| self.name.clone())
    }

    /// Checks `access` on `resource` named `name` (empty: a resource
    /// without names): the refusal names what is missing.
    pub fn check(&self, resource: Resource, name: &str, access: Access) -> Result<(), String> {
        if self.grants.allows(resource, name, access) {
            return Ok(());
        }
        Err(self.missing(&if resource.prefixed() && !name.is_empty() {
            format!("{}:{name}={}", resource.as_str(), access.as_str())
        } else {
            format!("{}={}", resource.as_str(), access.as_str())
        }))
    }

    /// Checks `access` on some names of `resource`.
    pub fn check_some(&self, resource: Resource, access: Access) -> Result<(), String> {
        if self.grants.allows_some(resource, access) {
            return Ok(());
        }
        Err(self.missing(&format!(
            "{}{}={}",
            resource.as_str(),
            if resource.prefixed() { ":…" } else { "" },
            access.as_str()
        )))
    }

    fn missing(&self, what: &str) -> String {
        format!(
            "token {:?} lacks {what}; its policies ({}) grant {}. Ask for a token whose policy has that rule (`shoal acl policy create NAME --rule {}`)",
            self.name,
            if self.policies.is_empty() {
                "none".to_owned()
            } else {
                self.policies.join(", ")
            },
            if self.grants.rules().is_empty() {
                "nothing".to_owned()
            } else {
                self.grants
                    .rules()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            what.replace(":…", ":PREFIX")
        )
    }
}

/// Why a presented ACL token is not accepted (401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token has that accessor, or the secret differs.
    #[error(
        "unknown token {0}: it was never made on this cluster, or this node has not heard of it yet (`shoal token list` on the node that made it)"
    )]
    Unknown(String),
    /// Revoked.
    #[error("token {accessor} ({name}) was revoked at {at}")]
    Revoked {
        /// Accessor.
        accessor: String,
        /// Name.
        name: String,
        /// When.
        at: String,
    },
    /// Past its TTL.
    #[error("token {accessor} ({name}) expired at {at}: make a new one (`shoal token create`)")]
    Expired {
        /// Accessor.
        accessor: String,
        /// Name.
        name: String,
        /// When.
        at: String,
    },
}

/// The tokens, policies and (sealed) secrets a node knows.
#[derive(Clone, Debug, Default)]
pub struct AclTable {
    /// `acl bootstrap` has happened.
    pub bootstrapped: bool,
    tokens: HashMap<String, AclToken>,
    policies: HashMap<String, Policy>,
    /// Secrets by name: their records, with the sealed values.
    secrets: HashMap<String, shoal_state::SecretRecord>,
    /// Nodes forgotten for good (`shoal node forget`), by id.
    forgotten: BTreeMap<NodeId, shoal_state::ForgottenNode>,
    /// The gossip keyring: its keys (removed ones included) and the key
    /// chosen to seal with.
    gossip_keys: Vec<shoal_state::GossipKeyRecord>,
    gossip_primary: Option<shoal_state::GossipPrimary>,
}

impl AclTable {
    /// The table of a replica.
    pub fn from_store(store: &Store) -> AclTable {
        let tokens: HashMap<String, AclToken> = store
            .acl_tokens()
            .into_iter()
            .map(|t| (t.accessor.clone(), t))
            .collect();
        AclTable {
            bootstrapped: tokens.values().any(|t| t.bootstrap),
            tokens,
            policies: store
                .acl_policies()
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            secrets: store
                .secrets()
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            forgotten: store
                .forgotten_nodes()
                .into_iter()
                .filter_map(|f| Some((f.id.parse().ok()?, f)))
                .collect(),
            gossip_keys: store.gossip_keys(),
            gossip_primary: store.gossip_primary(),
        }
    }

    /// The gossip keyring's keys, removed ones included, by id.
    pub fn gossip_keys(&self) -> &[shoal_state::GossipKeyRecord] {
        &self.gossip_keys
    }

    /// The key chosen to seal gossip with, if one was.
    pub fn gossip_primary(&self) -> Option<&shoal_state::GossipPrimary> {
        self.gossip_primary.as_ref()
    }

    /// The nodes forgotten for good, by id.
    pub fn forgotten(&self) -> &BTreeMap<NodeId, shoal_state::ForgottenNode> {
        &self.forgotten
    }

    /// The sealed value of secret `name`.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(|s| s.sealed.as_str())
    }

    /// The secrets (never their values), by name.
    pub fn secrets(&self) -> Vec<shoal_state::SecretRecord> {
        let mut all: Vec<_> = self.secrets.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every token, revoked ones included, by accessor.
    pub fn tokens(&self) -> Vec<AclToken> {
        let mut all: Vec<AclToken> = self.tokens.values().cloned().collect();
        all.sort_by(|a, b| a.accessor.cmp(&b.accessor));
        all
    }

    /// One token.
    pub fn token(&self, accessor: &str) -> Option<&AclToken> {
        self.tokens.get(accessor)
    }

    /// The built-in policies, then the stored ones, by name.
    pub fn policies(&self) -> Vec<(Policy, bool)> {
        let mut stored: Vec<Policy> = self.policies.values().cloned().collect();
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        [shoal_model::acl::MANAGEMENT, shoal_model::acl::READONLY]
            .into_iter()
            .filter_map(Policy::builtin)
            .map(|p| (p, true))
            .chain(stored.into_iter().map(|p| (p, false)))
            .collect()
    }

    /// One policy, built in or stored.
    pub fn policy(&self, name: &str) -> Option<Policy> {
        Policy::builtin(name).or_else(|| self.policies.get(name).cloned())
    }

    /// The caller behind ACL token `token` at `now_ms`.
    pub fn authenticate(&self, token: &str, now_ms: u64) -> Result<Caller, AuthError> {
        let shown = accessor_of(token).unwrap_or("(not a shoalt1_ token)");
        let unknown = || AuthError::Unknown(shown.to_owned());
        let accessor = accessor_of(token).ok_or_else(unknown)?;
        let t = self.tokens.get(accessor).ok_or_else(unknown)?;
        let presented = Digest::of(token.as_bytes()).hex();
        if !bool::from(presented.as_bytes().ct_eq(t.secret_sha256.as_bytes())) {
            return Err(unknown());
        }
        if t.revoked {
            return Err(AuthError::Revoked {
                accessor: t.accessor.clone(),
                name: t.name.clone(),
                at: t.revoked_at.clone().unwrap_or_default(),
            });
        }
        if let Some(exp) = t.expires_ms
            && now_ms >= exp
        {
            return Err(AuthError::Expired {
                accessor: t.accessor.clone(),
                name: t.name.clone(),
                at: t.expires_at.clone().unwrap_or_default(),
            });
        }
        let rules = t
            .policies
            .iter()
            .filter_map(|p| self.policy(p))
            .flat_map(|p| p.rules);
        Ok(Caller {
            name: t.name.clone(),
            accessor: Some(t.accessor.clone()),
            policies: t.policies.clone(),
            grants: Grants::of(rules),
            kind: CallerKind::Token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_gossip::NodeId;
    use shoal_state::{NewToken, StateConfig};

    fn store() -> Store {
        Store::new(NodeId(7), 1, StateConfig::default())
    }

    fn new_token(store: &mut Store, policies: &[&str], expires_ms: Option<u64>) -> MadeToken {
        let made = make_token().unwrap();
        store
            .acl_token_create(
                &NewToken {
                    accessor: made.accessor.clone(),
                    name: "t".into(),
                    policies: policies.iter().map(|p| (*p).to_owned()).collect(),
                    secret_sha256: made.sha256.clone(),
                    created_by: "test".into(),
                    expires_ms,
                    bootstrap: false,
                },
                1_000,
            )
            .unwrap();
        made
    }

    #[test]
    fn a_token_authenticates_until_revoked_or_expired() {
        let mut s = store();
        let made = new_token(&mut s, &["readonly"], Some(5_000));
        assert_eq!(accessor_of(&made.token), Some(made.accessor.as_str()));
        let table = AclTable::from_store(&s);
        let caller = table.authenticate(&made.token, 2_000).unwrap();
        assert!(caller.check(Resource::Jobs, "a", Access::Read).is_ok());
        let refused = caller
            .check(Resource::Jobs, "a", Access::Write)
            .unwrap_err();
        assert!(refused.contains("jobs:a=write"), "{refused}");
        assert!(matches!(
            table.authenticate(&made.token, 5_000),
            Err(AuthError::Expired { .. })
        ));
        // One character off is another token.
        let mut wrong = made.token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(
            table.authenticate(&wrong, 2_000),
            Err(AuthError::Unknown(_))
        ));
        s.acl_token_revoke(&made.accessor, 3_000).unwrap();
        assert!(matches!(
            AclTable::from_store(&s).authenticate(&made.token, 3_001),
            Err(AuthError::Revoked { .. })
        ));
    }

    #[test]
    fn stored_policies_grant_their_rules_and_unknown_ones_are_refused() {
        let mut s = store();
        s.acl_policy_put(
            &Policy {
                name: "web".into(),
                description: String::new(),
                rules: vec![shoal_model::acl::Rule::parse("jobs:web/=write").unwrap()],
            },
            1,
        )
        .unwrap();
        let made = new_token(&mut s, &["web"], None);
        let caller = AclTable::from_store(&s)
            .authenticate(&made.token, 2)
            .unwrap();
        assert!(caller.check(Resource::Jobs, "web/a", Access::Write).is_ok());
        assert!(caller.check(Resource::Jobs, "db/a", Access::Write).is_err());
        let e = s
            .acl_token_create(
                &NewToken {
                    accessor: "00000000000000aa".into(),
                    name: "x".into(),
                    policies: vec!["nope".into()],
                    secret_sha256: "0".repeat(64),
                    created_by: "test".into(),
                    expires_ms: None,
                    bootstrap: false,
                },
                3,
            )
            .unwrap_err();
        assert!(e.to_string().contains("no policy named \"nope\""), "{e}");
    }
}
