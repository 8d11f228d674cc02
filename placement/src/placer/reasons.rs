//! Why a key waits: the reasons of the members its auction walked past,
//! kept bounded at any cluster size.
//!
//! Contract: [`Reasons::add`] takes each member at most once per auction;
//! [`Reasons::lines`] gives every reason while they are few, and past
//! [`REASONS_LISTED`] a summary by kind, so a pending status stays a few
//! lines whether 20 or 500,000 members could not take the key.

use std::collections::BTreeMap;

use shoal_gossip::NodeId;

/// Members a pending key's status names one by one; past this, reasons are
/// summarized by kind.
const REASONS_LISTED: usize = 12;
/// Members named as examples of each kind of reason in a summary.
const REASON_EXAMPLES: usize = 3;
/// Kinds of reason a summary tells apart; the rest are counted together.
const REASON_KINDS: usize = 16;

/// Why the members a key's auction walked past could not take it, kept
/// bounded however many they are. A walk may pass every member of the
/// ring: at 500,000 nodes one line per member would make a status (and a
/// log line) of megabytes that nobody reads. Up to [`REASONS_LISTED`]
/// members every reason is kept; beyond, reasons are counted by kind (what
/// they say without the member's own figures: "needs 4 cpus" of "needs 4
/// cpus, 1.5 free") with a few members of each as examples.
#[derive(Clone, Debug, Default)]
pub(super) struct Reasons {
    /// Every member's reason, while there are at most [`REASONS_LISTED`].
    listed: BTreeMap<NodeId, String>,
    kinds: BTreeMap<String, ReasonKind>,
    /// Members whose reason is of none of the kinds kept.
    other: usize,
    total: usize,
}

#[derive(Clone, Debug, Default)]
struct ReasonKind {
    count: usize,
    examples: Vec<(NodeId, String)>,
}

/// A reason without the member's own figures: the text before its last
/// ", " ("needs 4 cpus, 1.5 free") or its last " (" ("constraint dc = eu
/// failed (us)").
fn reason_kind(why: &str) -> &str {
    if why.ends_with(')')
        && let Some(at) = why.rfind(" (")
    {
        return &why[..at];
    }
    if why.starts_with("needs ")
        && let Some(at) = why.rfind(", ")
    {
        return &why[..at];
    }
    why
}

impl Reasons {
    /// Records why `node` could not take the key (each member once).
    pub(super) fn add(&mut self, node: NodeId, why: String) {
        self.total += 1;
        let kind = reason_kind(&why);
        let known = self.kinds.contains_key(kind);
        if known || self.kinds.len() < REASON_KINDS {
            let k = self.kinds.entry(kind.to_owned()).or_default();
            k.count += 1;
            if k.examples.len() < REASON_EXAMPLES {
                k.examples.push((node, why.clone()));
            }
        } else {
            self.other += 1;
        }
        if self.total <= REASONS_LISTED {
            self.listed.insert(node, why);
        } else {
            self.listed.clear();
        }
    }

    /// The lines of a pending status: `name: reason` per member, or, past
    /// [`REASONS_LISTED`], per kind from the most common: its examples and
    /// `and N more: kind`.
    pub(super) fn lines(&self, name_of: impl Fn(NodeId) -> String) -> Vec<String> {
        if self.total <= REASONS_LISTED {
            return self
                .listed
                .iter()
                .map(|(n, r)| format!("{}: {r}", name_of(*n)))
                .collect();
        }
        let mut kinds: Vec<(&String, &ReasonKind)> = self.kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let mut lines = vec![format!("{} nodes could not take it:", self.total)];
        for (kind, k) in kinds {
            for (n, r) in &k.examples {
                lines.push(format!("{}: {r}", name_of(*n)));
            }
            if k.count > k.examples.len() {
                lines.push(format!("and {} more: {kind}", k.count - k.examples.len()));
            }
        }
        if self.other > 0 {
            lines.push(format!("and {} more for other reasons", self.other));
        }
        lines
    }
}
