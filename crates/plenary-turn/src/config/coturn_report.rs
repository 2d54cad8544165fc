//! What `plenary turn` and `check-config` tell an operator about a coturn file: options
//! accepted but not acted on, and options whose meaning differs in Plenary (a coturn habit
//! that would otherwise break silently), the peer filter's found from the resolved config.

use super::TurnConfig;
use crate::policy::IpRange;
use std::net::{IpAddr, Ipv4Addr};

/// What the operator must be told at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoturnReport {
    /// Options accepted but not honoured (harmless), e.g. `dh-file`, each as
    /// `name (why)`.
    pub unsupported: Vec<String>,
    /// Options honoured with a meaning that differs from coturn's, each as
    /// `name (difference)`; a coturn habit that would otherwise break silently.
    pub differs: Vec<String>,
}

impl CoturnReport {
    /// The one line logged at start, or `None` when everything was honoured.
    pub fn summary_line(&self) -> Option<String> {
        if self.unsupported.is_empty() {
            return None;
        }
        Some(format!(
            "coturn options accepted but not acted on: {}",
            self.unsupported.join(", ")
        ))
    }

    /// Every option whose meaning differs from coturn's, for `config` as finally resolved
    /// (command-line flags included): the file's options, then the peer filter's.
    pub fn differences(&self, config: &TurnConfig) -> Vec<String> {
        let mut all = self.differs.clone();
        all.extend(peer_differences(config));
        all
    }

    /// The line naming every option whose meaning differs from coturn's, or `None`.
    pub fn differs_line(&self, config: &TurnConfig) -> Option<String> {
        let all = self.differences(config);
        if all.is_empty() {
            return None;
        }
        Some(format!(
            "coturn options that mean something else in Plenary: {}",
            all.join(", ")
        ))
    }

    pub(super) fn differ(&mut self, name: &str, how: &str) {
        let entry = format!("{name} ({how})");
        if !self.differs.contains(&entry) {
            self.differs.push(entry);
        }
    }

    pub(super) fn note(&mut self, name: &str, why: &str) {
        let entry = format!("{name} ({why})");
        if !self.unsupported.contains(&entry) {
            self.unsupported.push(entry);
        }
    }
}

/// Where the peer filter refuses what coturn, with the same settings, would relay to.
fn peer_differences(config: &TurnConfig) -> Vec<String> {
    let peers = &config.peers;
    let mut out = Vec::new();
    let all_v4 = IpRange {
        start: Ipv4Addr::UNSPECIFIED.into(),
        end: Ipv4Addr::BROADCAST.into(),
    };
    if !peers.denied.contains(&all_v4) {
        out.push(
            "denied-peer-ip (Plenary also refuses private, loopback, link-local, multicast and \
             reserved peers and its own addresses unless allowed-peer-ip names them; coturn \
             relays to them unless denied-peer-ip does)"
                .to_owned(),
        );
    }
    if !peers.allow_loopback {
        return out;
    }
    // The policy refuses the server's own addresses (see `policy`), coturn does not.
    let own: std::collections::BTreeSet<IpAddr> = config
        .listening_ips
        .iter()
        .chain(&config.relay_ips)
        .filter(|ip| ip.is_loopback() && !peers.allowed.iter().any(|r| r.contains(**ip)))
        .copied()
        .collect();
    // Only the server's own loopback addresses are refused where coturn relays; with none
    // (wildcard or non-loopback listening), allow-loopback-peers means what it means there.
    if !own.is_empty() {
        let ips: Vec<String> = own.iter().map(IpAddr::to_string).collect();
        let lines: Vec<String> = ips
            .iter()
            .map(|ip| format!("allowed-peer-ip={ip}"))
            .collect();
        out.push(format!(
            "allow-loopback-peers (opens loopback peers as in coturn, but not this server's own \
             addresses {}: add {} to relay to peers there)",
            ips.join(" and "),
            lines.join(" and ")
        ));
    }
    out
}
