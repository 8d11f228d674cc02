//! The gossip keyring: which keys seal and open gossip datagrams.
//!
//! Every cluster starts with one key, derived from the cluster secret
//! ("the cluster key"). `shoal keyring install` adds keys (32 random
//! bytes, sealed in the replicated state with the secrets key, so only
//! nodes can open them), `use` picks the one datagrams are sealed with,
//! `remove` drops one for good, the cluster key included. Every node opens
//! datagrams with every key it holds, so a rotation needs no downtime:
//! install everywhere, then use, then remove (docs/security.md).

use shoal_gossip::{GossipKey, PacketSecurity};

use crate::acl::AclTable;
use crate::secrets::SecretsKey;

/// The associated data a keyring key is sealed under.
pub fn sealing_name(id: &str) -> String {
    format!("keyring/{id}")
}

/// A key id as the API and the CLI show it (8 hex digits).
pub fn hex_id(id: u32) -> String {
    format!("{id:08x}")
}

/// The id of the cluster key of `secret`.
pub fn cluster_key_id(secret: &[u8; 32]) -> u32 {
    GossipKey::derive(secret, 0).id()
}

/// The ids of the keyring's keys not removed, in the order nodes hold
/// them: the cluster key (whose id is `cluster_key`) unless removed, then
/// the installed ones.
pub fn live_ids(table: &AclTable, cluster_key: u32) -> Vec<String> {
    let removed = |id: &str| table.gossip_keys().iter().any(|k| k.id == id && k.removed);
    let own = hex_id(cluster_key);
    let mut ids: Vec<String> = Vec::new();
    if !removed(&own) {
        ids.push(own);
    }
    for k in table.gossip_keys() {
        if !k.removed && !k.sealed.is_empty() && !ids.contains(&k.id) {
            ids.push(k.id.clone());
        }
    }
    ids
}

/// The id of the key chosen to seal with (`shoal keyring use`), or the
/// cluster key's while none was chosen.
pub fn chosen_id(table: &AclTable, cluster_key: u32) -> String {
    table
        .gossip_primary()
        .map_or_else(|| hex_id(cluster_key), |p| p.id.clone())
}

/// The keys of the keyring this node can use: those of [`live_ids`] whose
/// sealed value opens here.
pub fn keys(secret: &[u8; 32], key: &SecretsKey, table: &AclTable) -> Vec<GossipKey> {
    let own = GossipKey::derive(secret, 0);
    let mut keys = Vec::new();
    for id in live_ids(table, own.id()) {
        if id == hex_id(own.id()) {
            keys.push(own.clone());
            continue;
        }
        let Some(r) = table.gossip_keys().iter().find(|k| k.id == id) else {
            continue;
        };
        let opened = key.open(&sealing_name(&r.id), &r.sealed).ok();
        let Some(bytes) = opened.and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
            tracing::warn!(key = %r.id, "a keyring key does not open with this node's cluster secret; ignored");
            continue;
        };
        let k = GossipKey::from_key(&bytes);
        if hex_id(k.id()) == r.id && !keys.iter().any(|x| x.id() == k.id()) {
            keys.push(k);
        }
    }
    keys
}

/// What gossip is sealed and opened with: the chosen key seals (the
/// cluster key while none was chosen, or when the chosen one is not held
/// here), every held key opens. Never empty: with every key removed, the
/// cluster key stays (the API refuses to remove the last one).
pub fn security(secret: &[u8; 32], key: &SecretsKey, table: &AclTable) -> PacketSecurity {
    let mut keys = keys(secret, key, table);
    if keys.is_empty() {
        keys.push(GossipKey::derive(secret, 0));
    }
    let chosen = chosen_id(table, cluster_key_id(secret));
    let chosen = keys
        .iter()
        .position(|k| hex_id(k.id()) == chosen)
        .unwrap_or(0);
    let primary = keys.remove(chosen);
    PacketSecurity::Sealed {
        primary,
        accepted: keys,
    }
}

#[cfg(test)]
mod tests {
    use shoal_gossip::NodeId;
    use shoal_state::{StateConfig, Store};

    use super::*;
    use crate::token::ClusterSecret;

    #[test]
    fn the_chosen_key_seals_every_held_key_opens_and_removed_ones_go() {
        let secret = ClusterSecret::generate().unwrap();
        let sk = SecretsKey::derive(&secret);
        let mut store = Store::new(NodeId(1), 1, StateConfig::default());
        let own = hex_id(cluster_key_id(secret.bytes()));
        let table = |s: &Store| AclTable::from_store(s);
        // At first: the cluster key alone.
        let sec = security(secret.bytes(), &sk, &table(&store));
        assert_eq!(
            sec.key_ids().iter().map(|k| hex_id(*k)).collect::<Vec<_>>(),
            [own.as_str()]
        );

        let bytes = [9u8; 32];
        let id = hex_id(GossipKey::from_key(&bytes).id());
        let sealed = sk.seal(&sealing_name(&id), &bytes).unwrap();
        store.gossip_key_install(&id, &sealed, None, 1).unwrap();
        let sec = security(secret.bytes(), &sk, &table(&store));
        assert_eq!(
            hex_id(sec.primary_id()),
            own,
            "installed, not chosen: the cluster key seals"
        );
        assert_eq!(sec.key_ids().len(), 2);

        store.gossip_key_use(&id, None, 2).unwrap();
        let sec = security(secret.bytes(), &sk, &table(&store));
        assert_eq!(hex_id(sec.primary_id()), id);
        store.gossip_key_remove(&own, None, 3).unwrap();
        let sec = security(secret.bytes(), &sk, &table(&store));
        assert_eq!(
            sec.key_ids().iter().map(|k| hex_id(*k)).collect::<Vec<_>>(),
            [id.as_str()]
        );

        // A key sealed under another cluster's secret is ignored.
        let other = SecretsKey::derive(&ClusterSecret::generate().unwrap());
        let stray = [7u8; 32];
        let stray_id = hex_id(GossipKey::from_key(&stray).id());
        let sealed = other.seal(&sealing_name(&stray_id), &stray).unwrap();
        store
            .gossip_key_install(&stray_id, &sealed, None, 4)
            .unwrap();
        let sec = security(secret.bytes(), &sk, &table(&store));
        assert_eq!(sec.key_ids().len(), 1);
    }
}
