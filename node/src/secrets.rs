//! Secrets: sealed by the node that stores one, opened by the node that
//! starts a task referring to it.
//!
//! The key is derived from the cluster secret (HKDF-SHA256, its own label),
//! so every node can open what any node sealed and nothing without the
//! cluster secret can: not an API client, not a reader of a data dir's
//! state log (which holds only sealed values). A value is sealed with
//! XChaCha20-Poly1305 under a random 24-byte nonce, with the secret's name
//! as associated data (a sealed value copied under another name does not
//! open), and stored as base64 of nonce, ciphertext and tag. See
//! docs/security.md.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use tokio::sync::watch;

use crate::acl::AclTable;
use crate::token::ClusterSecret;

/// The largest value a secret holds.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The key secrets are sealed with.
#[derive(Clone)]
pub struct SecretsKey(XChaCha20Poly1305);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(…)")
    }
}

impl SecretsKey {
    /// The key of a cluster.
    pub fn derive(secret: &ClusterSecret) -> SecretsKey {
        let hk = Hkdf::<Sha256>::new(Some(b"shoal secrets v1"), secret.bytes());
        let mut key = [0u8; 32];
        hk.expand(b"secrets key", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SecretsKey(XChaCha20Poly1305::new(&Key::from(key)))
    }

    /// Seals `value` of secret `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<String, getrandom::Error> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce)?;
        let mut body = value.to_vec();
        let tag = self
            .0
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                name.as_bytes(),
                body.as_mut_slice().into(),
            )
            .expect("XChaCha20-Poly1305 seals any secret-sized buffer");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_slice());
        Ok(STANDARD.encode(out))
    }

    /// Opens the sealed value of secret `name`.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, String> {
        let raw = STANDARD
            .decode(sealed)
            .map_err(|e| format!("secret {name:?} is not stored as base64 ({e})"))?;
        if raw.len() < 24 + 16 {
            return Err(format!("secret {name:?} is stored truncated"));
        }
        let (nonce, rest) = raw.split_at(24);
        let (ciphertext, tag) = rest.split_at(rest.len() - 16);
        let nonce: [u8; 24] = nonce.try_into().expect("24 bytes");
        let tag = Tag::try_from(tag).map_err(|_| format!("secret {name:?} is stored truncated"))?;
        let mut body = ciphertext.to_vec();
        self.0
            .decrypt_inout_detached(&XNonce::from(nonce), name.as_bytes(), body.as_mut_slice().into(), &tag)
            .map_err(|_| {
                format!("secret {name:?} does not open with this cluster's key (stored by another cluster, or damaged)")
            })?;
        Ok(body)
    }
}

/// Opens the secrets tasks refer to, from the node's current table.
#[derive(Clone, Debug)]
pub struct Secrets {
    key: SecretsKey,
    table: watch::Receiver<Arc<AclTable>>,
}

impl Secrets {
    /// A resolver with `key` over the state task's table.
    pub fn new(key: SecretsKey, table: watch::Receiver<Arc<AclTable>>) -> Secrets {
        Secrets { key, table }
    }

    /// The value of secret `name`, as text for an environment variable.
    pub fn value(&self, name: &str) -> Result<String, String> {
        let table = self.table.borrow().clone();
        let sealed = table.secret(name).ok_or_else(|| {
            format!("no secret named {name:?} is known to this node: store it with `shoal secret put {name}`")
        })?;
        let bytes = self.key.open(name, sealed)?;
        String::from_utf8(bytes).map_err(|_| {
            format!("secret {name:?} is not UTF-8 text and cannot be an environment variable")
        })
    }
}

/// `env` as (name, value) pairs, secrets opened with `secrets` (a secret
/// without a resolver is an error naming it).
pub fn resolve_env(
    secrets: Option<&Secrets>,
    env: &std::collections::BTreeMap<String, shoal_model::EnvValue>,
) -> Result<Vec<(String, String)>, String> {
    env.iter()
        .map(|(k, v)| match v {
            shoal_model::EnvValue::Plain(p) => Ok((k.clone(), p.clone())),
            shoal_model::EnvValue::Secret { secret } => match secrets {
                Some(s) => s.value(secret).map(|value| (k.clone(), value)),
                None => Err(format!(
                    "env {k}: secret {secret:?} cannot be opened here (no cluster key)"
                )),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_under_its_name_with_its_clusters_key_only() {
        let secret = ClusterSecret::generate().unwrap();
        let key = SecretsKey::derive(&secret);
        let sealed = key.seal("db/password", b"hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(key.open("db/password", &sealed).unwrap(), b"hunter2");
        assert!(key.open("db/other", &sealed).is_err(), "bound to its name");
        let other = SecretsKey::derive(&ClusterSecret::generate().unwrap());
        assert!(
            other
                .open("db/password", &sealed)
                .unwrap_err()
                .contains("another cluster")
        );
        assert_ne!(
            sealed,
            key.seal("db/password", b"hunter2").unwrap(),
            "fresh nonce"
        );
    }
}
