//! The cluster secret and the join token that carries it.
//!
//! The founding agent draws 32 random bytes. Everything else is derived from
//! them: the gossip key, and later the cluster CA. The token handed to joining
//! nodes (and, until scoped tokens exist, used as the API bearer token) is
//! `shoal1_` followed by the secret in unpadded base64url.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

const PREFIX: &str = "shoal1_";

/// The cluster secret. Equality is constant time (`subtle`), so comparing
/// a presented secret with ours tells nothing about where they differ.
#[derive(Clone)]
pub struct ClusterSecret([u8; 32]);

impl PartialEq for ClusterSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for ClusterSecret {}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

/// A string that is not a cluster token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid cluster token: {why}; expected the `shoal1_…` token printed by the founding agent (also in <data-dir>/token on any node)"
)]
pub struct TokenError {
    /// What is wrong.
    pub why: String,
}

impl ClusterSecret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Result<ClusterSecret, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(ClusterSecret(bytes))
    }

    /// A secret from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterSecret {
        ClusterSecret(bytes)
    }

    /// The raw secret.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The token form.
    pub fn to_token(&self) -> String {
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Parses a token.
    pub fn from_token(token: &str) -> Result<ClusterSecret, TokenError> {
        let token = token.trim();
        let Some(body) = token.strip_prefix(PREFIX) else {
            return Err(TokenError {
                why: format!("it does not start with `{PREFIX}`"),
            });
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|e| TokenError {
            why: format!("it is not base64url ({e})"),
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| TokenError {
            why: format!("it holds {} bytes instead of 32", b.len()),
        })?;
        Ok(ClusterSecret(bytes))
    }

    /// Whether `token` is this secret's token, in time independent of
    /// where they differ (the bytes are compared with `subtle`'s
    /// `ConstantTimeEq`; a token that does not parse is refused before any
    /// comparison, which tells nothing about the secret).
    pub fn matches_token(&self, token: &str) -> bool {
        match ClusterSecret::from_token(token) {
            Ok(other) => self == &other,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        let s = ClusterSecret::generate().unwrap();
        let t = s.to_token();
        assert!(t.starts_with("shoal1_"));
        assert_eq!(ClusterSecret::from_token(&t).unwrap(), s);
        assert!(s.matches_token(&t));
        assert!(!s.matches_token(&ClusterSecret::generate().unwrap().to_token()));
        assert!(!s.matches_token("nonsense"));
        // One bit off anywhere, first byte or last, is another secret.
        for i in [0, 17, 31] {
            let mut bytes = *s.bytes();
            bytes[i] ^= 1;
            let near = ClusterSecret::from_bytes(bytes);
            assert_ne!(near, s);
            assert!(!s.matches_token(&near.to_token()));
        }
    }

    #[test]
    fn bad_tokens_say_why() {
        let e = ClusterSecret::from_token("abc").unwrap_err();
        assert!(e.why.contains("shoal1_"), "{e}");
        let e = ClusterSecret::from_token("shoal1_!!!").unwrap_err();
        assert!(e.why.contains("base64"), "{e}");
        let e = ClusterSecret::from_token("shoal1_AAAA").unwrap_err();
        assert!(e.why.contains("3 bytes"), "{e}");
    }
}
