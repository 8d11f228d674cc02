//! Draining a placer: the one rule of how a node handles what its placer
//! produced, shared by [`crate::NodeCore`] and by the simulator's scale
//! mode (which drives bare placers over a shared member view).

use shoal_gossip::{Instant, NodeId};
use shoal_placement::{Command, Event, Msg, Placer};

/// Rounds of self-addressed messages handled in one drain, at most. A
/// message to itself may produce another (a coordinator bidding on its own
/// auction); a placer never loops, and this bound keeps a bug from hanging
/// the node.
pub const MAX_ROUNDS: usize = 1000;

/// One thing a placer produced for the outside.
#[derive(Debug)]
pub enum Drained {
    /// A message for another node.
    Message {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: Msg,
    },
    /// A command for the runtimes.
    Command(Command),
    /// An event.
    Event(Event),
}

/// Takes everything `placer` produced and hands it to `out`, in order:
/// per round, the messages for other nodes, then the runtime commands, then
/// the events. Messages this node sent itself are handled at once, as a
/// new round, so that they never cross the network.
pub fn drain_placer(placer: &mut Placer, now: Instant, wall_ms: u64, mut out: impl FnMut(Drained)) {
    let me = placer.me();
    for _ in 0..MAX_ROUNDS {
        let mut local = Vec::new();
        while let Some((to, msg)) = placer.poll_message() {
            if to == me {
                local.push(msg);
            } else {
                out(Drained::Message { to, msg });
            }
        }
        while let Some(c) = placer.poll_command() {
            out(Drained::Command(c));
        }
        while let Some(e) = placer.poll_event() {
            out(Drained::Event(e));
        }
        if local.is_empty() {
            return;
        }
        for msg in local {
            placer.handle_message(now, wall_ms, me, msg);
        }
    }
}
