//! The edge between real time and the state machines' [`Instant`].

use std::time::{Duration, SystemTime};

use shoal_gossip::Instant;

/// Real time, mapped to microseconds since the agent started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
    origin_wall: SystemTime,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Clock {
        Clock {
            origin: std::time::Instant::now(),
            origin_wall: SystemTime::now(),
        }
    }

    /// Now, for the state machines.
    pub fn now(&self) -> Instant {
        let micros = self.origin.elapsed().as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// The tokio deadline of `at`.
    pub fn deadline(&self, at: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.origin + Duration::from_micros(at.as_micros()))
    }

    /// The wall-clock time of `at`.
    pub fn wall(&self, at: Instant) -> SystemTime {
        self.origin_wall + Duration::from_micros(at.as_micros())
    }

    /// `at` in RFC 3339, seconds precision, UTC.
    pub fn rfc3339(&self, at: Instant) -> String {
        humantime::format_rfc3339_seconds(self.wall(at)).to_string()
    }
}

/// Wall-clock time in milliseconds since the Unix epoch (for timestamps in
/// the desired state; never for protocol timing).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
