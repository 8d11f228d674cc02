//! Start-up phase: the settings of this start (flags over the last start's
//! `settings.json` over defaults) and the membership timing they select.

use shoal_gossip::Config;
use tracing::info;

use super::{AgentError, AgentOptions};
use crate::datadir::{DataDir, StoredSettings};

/// Merges the flags with the stored settings (flags win and are saved) and
/// picks the gossip preset.
pub(super) fn resolve(
    opts: &AgentOptions,
    data_dir: &DataDir,
) -> Result<(StoredSettings, Config), AgentError> {
    let stored = data_dir.load_settings()?;
    let settings = StoredSettings {
        name: opts.name.clone().or(stored.name),
        dc: opts.dc.clone().or(stored.dc),
        zone: opts.zone.clone().or(stored.zone),
        region: opts.region.clone().or(stored.region),
        labels: if opts.labels.is_empty() {
            stored.labels
        } else {
            Some(opts.labels.iter().cloned().collect())
        },
        cpus: opts.cpus.or(stored.cpus),
        memory_mb: opts.memory_mb.or(stored.memory_mb),
        bind: opts.bind.or(stored.bind),
        rpc: opts.rpc.or(stored.rpc),
        api: opts.api.or(stored.api),
        dns: opts.dns.clone().or(stored.dns),
        advertise: opts.advertise.or(stored.advertise),
        api_insecure: opts.api_insecure.or(stored.api_insecure),
        gossip: opts.gossip.clone().or(stored.gossip),
        suspicion_mult: opts.suspicion_mult.or(stored.suspicion_mult),
        reach_only_dc_size: opts.reach_only_dc_size.or(stored.reach_only_dc_size),
        draining: stored.draining,
    };
    if let Some(d) = &settings.dns
        && d != "off"
        && d.parse::<std::net::SocketAddr>().is_err()
    {
        return Err(AgentError::Usage(format!(
            "--dns must be HOST:PORT (port 0 picks a free one) or off (got {d:?})"
        )));
    }
    if let Some(c) = settings.cpus
        && !(c > 0.0 && c.is_finite())
    {
        return Err(AgentError::Usage(format!("--cpus must be > 0 (got {c})")));
    }
    let preset = settings.gossip.clone().unwrap_or_else(|| "lan".into());
    let mut config = Config::preset(&preset).ok_or_else(|| {
        AgentError::Usage(format!(
            "--gossip: unknown preset {preset:?} (use lan, wan or test)"
        ))
    })?;
    if let Some(mult) = settings.suspicion_mult {
        if !(mult.is_finite() && (0.5..=20.0).contains(&mult)) {
            return Err(AgentError::Usage(format!(
                "--suspicion-mult must be between 0.5 and 20 (got {mult})"
            )));
        }
        config.suspicion_mult = mult;
    }
    if let Some(size) = settings.reach_only_dc_size {
        config.reach_only_dc_size = size;
    }
    info!(
        preset = %preset,
        suspicion_mult = config.suspicion_mult,
        reach_only_dc_size = config.reach_only_dc_size,
        "membership timing"
    );
    data_dir.store_settings(&settings)?;
    Ok((settings, config))
}
