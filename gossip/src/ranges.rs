//! Member-list anti-entropy by id ranges.
//!
//! SWIM spreads each join as a rumor that can, rarely, miss a node; a node
//! that missed it never probes the newcomer, and the newcomer may never
//! probe it, so neither would ever learn of the other. To repair such gaps
//! every node periodically sends one random member a digest of the live
//! members it knows in a few consecutive ranges of a hash of the id space
//! (a 4-byte digest per range, about 16 members each), going on from the
//! last round's ranges so that a pass covers everyone in `N / 128` rounds. The receiver compares with its
//! own view and, for each range that differs, sends back the members it
//! knows there; the first node then sends what the other lacked. Nothing
//! else travels while views agree, so the cost is one small datagram per
//! period per node whatever the cluster size, and each round covers
//! `RANGES × RANGE_MEMBERS` members of the id space.

use std::collections::BTreeMap;

/// Ranges compared per round.
pub(crate) const RANGES: usize = 8;
/// Members expected in one range: the range width is chosen from the
/// cluster size so that a range's members fit in a datagram easily.
pub(crate) const RANGE_MEMBERS: u64 = 16;
/// Members one range-digest round covers: a pass over the member space
/// takes `N / MEMBERS_PER_DIGEST_ROUND` rounds of `member_digest_period`.
pub const MEMBERS_PER_DIGEST_ROUND: u64 = RANGES as u64 * RANGE_MEMBERS;

/// Width of one range of the 64-bit id space for a cluster of `members`.
pub(crate) fn width(members: usize) -> u64 {
    let members = u64::try_from(members).unwrap_or(u64::MAX).max(1);
    // Never fewer ranges than one round covers: a small cluster is covered
    // whole by every round.
    let ranges = members.div_ceil(RANGE_MEMBERS).max(RANGES as u64);
    u64::MAX / ranges
}

/// Whether `position` lies in the range of `len` positions from `start`
/// (wrapping).
pub(crate) fn contains(start: u64, len: u64, position: u64) -> bool {
    position.wrapping_sub(start) < len
}

/// The entries of `index` (keyed by position) in the range of `len`
/// positions from `start`; a range that wraps past the top of the space
/// goes on from 0.
pub(crate) fn entries_in<V>(
    index: &BTreeMap<u64, V>,
    start: u64,
    len: u64,
) -> impl Iterator<Item = (&u64, &V)> {
    let (head, tail) = match start.checked_add(len) {
        Some(end) => (index.range(start..end), index.range(0..0)),
        None => (
            index.range(start..),
            index.range(0..start.wrapping_add(len)),
        ),
    };
    head.chain(tail)
}

/// Where a member sits in the space the ranges divide: a fixed bijective
/// hash of its id, so that ranges hold members evenly whatever the ids
/// (random in agents, small integers in tests and the simulator).
pub(crate) fn position(id: u64) -> u64 {
    mix(id ^ POSITION_SALT)
}

/// The member id at `position`: the inverse of [`position`].
pub(crate) fn id_at(position: u64) -> u64 {
    unmix(position) ^ POSITION_SALT
}

/// Mixed into ids before [`mix`], so that positions differ from other
/// uses of the mixer.
const POSITION_SALT: u64 = 0x5348_4f41_4c52_4e47;

/// The contribution of one member life to a range digest. Digests are the
/// XOR of their members' contributions, so order does not matter.
pub(crate) fn member_hash(id: u64, bump: u32) -> u64 {
    mix(id ^ mix(u64::from(bump) ^ 0x9e37_79b9_7f4a_7c15))
}

/// A range digest as sent: its low 32 bits.
pub(crate) fn wire_digest(digest: u64) -> [u8; 4] {
    (digest as u32).to_le_bytes()
}

const MIX_1: u64 = 0xbf58_476d_1ce4_e5b9;
const MIX_2: u64 = 0x94d0_49bb_1331_11eb;
/// Their inverses modulo 2^64, for [`unmix`] (computed at build time).
const UNMIX_1: u64 = inverse(MIX_1);
const UNMIX_2: u64 = inverse(MIX_2);

/// splitmix64's finalizer: a fixed, portable 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(MIX_1);
    z = (z ^ (z >> 27)).wrapping_mul(MIX_2);
    z ^ (z >> 31)
}

/// The inverse of [`mix`]: each step of it (an xor with a right shift of
/// itself, a product by an odd number) undone in reverse order.
fn unmix(mut z: u64) -> u64 {
    z = unshift(z, 31).wrapping_mul(UNMIX_2);
    z = unshift(z, 27).wrapping_mul(UNMIX_1);
    unshift(z, 30)
}

/// `x` such that `x ^ (x >> by) == z`.
fn unshift(z: u64, by: u32) -> u64 {
    let mut x = z;
    let mut shift = by;
    while shift < 64 {
        x = z ^ (x >> by);
        shift += by;
    }
    x
}

/// The inverse of odd `m` modulo 2^64 (Newton's iteration: each step
/// doubles the bits that are right, from 3 to past 64).
const fn inverse(m: u64) -> u64 {
    let mut x = m;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
        i += 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_small_clusters_whole() {
        let w = width(10);
        assert!(w.saturating_mul(RANGES as u64) >= u64::MAX - RANGES as u64);
        // 500,000 members: ranges of about 16.
        let w = width(500_000);
        let per_range = 500_000.0 * (w as f64 / u64::MAX as f64);
        assert!((15.0..=17.0).contains(&per_range), "{per_range}");
    }

    #[test]
    fn positions_spread_small_ids_over_the_ranges() {
        // Ids 1..=1600 (as in tests and the simulator): about 16 per range,
        // never so many that a range's answer needs a second datagram.
        let w = width(1600);
        let mut counts = std::collections::BTreeMap::new();
        for id in 1..=1600u64 {
            *counts.entry(position(id) / w).or_insert(0u32) += 1;
        }
        let max = counts.values().max().copied().unwrap_or(0);
        assert!(
            counts.len() >= 90 && max <= 40,
            "{} ranges, max {max}",
            counts.len()
        );
    }

    #[test]
    fn contains_wraps_around_the_id_space() {
        assert!(contains(u64::MAX - 1, 4, 1));
        assert!(contains(u64::MAX - 1, 4, u64::MAX));
        assert!(!contains(u64::MAX - 1, 4, 2));
        assert!(contains(10, 5, 14));
        assert!(!contains(10, 5, 15));
        assert!(!contains(10, 5, 9));
    }

    proptest::proptest! {
        #[test]
        fn id_at_inverts_position(id: u64) {
            proptest::prop_assert_eq!(id_at(position(id)), id);
            proptest::prop_assert_eq!(unmix(mix(id)), id);
        }
    }

    #[test]
    fn id_at_inverts_position_of_small_ids() {
        for id in 0..10_000 {
            assert_eq!(id_at(position(id)), id);
        }
        assert_eq!(UNMIX_1.wrapping_mul(MIX_1), 1);
        assert_eq!(UNMIX_2.wrapping_mul(MIX_2), 1);
    }

    #[test]
    fn member_hash_tells_lives_apart() {
        assert_ne!(member_hash(1, 1), member_hash(1, 2));
        assert_ne!(member_hash(1, 1), member_hash(2, 1));
        assert_eq!(member_hash(7, 3), member_hash(7, 3));
    }
}
