//! Start-up phase: who this node is (the same id forever, a larger start
//! counter each time) and which cluster it belongs to (the secret: given,
//! stored, or founded here).

use shoal_gossip::NodeId;

use super::{AgentError, AgentOptions, random_u64};
use crate::datadir::{DataDir, DataDirError, StoredNode};
use crate::token::ClusterSecret;

/// Loads `node.json` (or draws a node id), increases the start counter and
/// makes it durable.
pub(super) fn node(data_dir: &DataDir) -> Result<(StoredNode, NodeId), AgentError> {
    let node = match data_dir.load_node()? {
        Some(n) => StoredNode {
            node_id: n.node_id,
            bump: n.bump.saturating_add(1),
        },
        None => StoredNode {
            node_id: NodeId(random_u64()?.max(1)).to_string(),
            bump: 1,
        },
    };
    data_dir.store_node(&node)?;
    let node_id = node.id().map_err(|why| DataDirError::Corrupt {
        path: data_dir.file("node.json"),
        why,
    })?;
    Ok((node, node_id))
}

/// The cluster secret: `--token`, else the `token` file, else a new
/// cluster founded here (only without `--join`). A data dir never switches
/// clusters. Returns whether this start founded the cluster.
pub(super) fn secret(
    opts: &AgentOptions,
    data_dir: &DataDir,
) -> Result<(ClusterSecret, bool), AgentError> {
    let given = opts
        .token
        .as_deref()
        .map(ClusterSecret::from_token)
        .transpose()
        .map_err(AgentError::Token)?;
    let stored = data_dir.load_secret()?;
    match (given, stored) {
        (Some(g), Some(s)) if g != s => Err(AgentError::OtherCluster {
            path: data_dir.path().to_owned(),
        }),
        (Some(g), Some(_)) => Ok((g, false)),
        (Some(g), None) => {
            data_dir.store_secret(&g)?;
            Ok((g, false))
        }
        (None, Some(s)) => Ok((s, false)),
        (None, None) => {
            if !opts.join.is_empty() {
                return Err(AgentError::Usage(
                    "--join needs --token: use the token printed by the founding agent (also in <data-dir>/token on any node)".into(),
                ));
            }
            let s = ClusterSecret::generate().map_err(AgentError::Random)?;
            data_dir.store_secret(&s)?;
            Ok((s, true))
        }
    }
}
