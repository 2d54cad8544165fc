//! Arguments checked and resolved into what the driver needs, before any socket opens.

use super::args::{PeerMode, Transport, TurnProbeArgs};
use super::client::Credentials;
use super::flow::FlowShape;
use crate::stats::flow::Mode;
use anyhow::{bail, Context as _};
use plenary_turn::stun::integrity::rest_password;
use rustls::pki_types::ServerName;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// More flows than this would need more sockets and memory than a probe host should
/// spend; split the load over several probe hosts instead.
pub const MAX_ALLOCATIONS: u32 = 20_000;
/// One peer socket per this many flows (bounded below), so no single peer task carries
/// everything.
const FLOWS_PER_PEER: u32 = 64;
const MAX_PEERS: u32 = 16;

pub enum CredentialSource {
    None,
    Rest { secret: String, expiry: u64 },
    Static(Credentials),
}

impl CredentialSource {
    /// Credentials for allocation `id`: REST usernames are "expiry:probeN", as BBB's
    /// web app makes them ("expiry:user").
    pub fn for_id(&self, id: u32) -> Option<Credentials> {
        match self {
            CredentialSource::None => None,
            CredentialSource::Rest { secret, expiry } => {
                let username = format!("{expiry}:probe{id}");
                let password = rest_password(secret.as_bytes(), &username);
                Some(Credentials { username, password })
            }
            CredentialSource::Static(c) => Some(c.clone()),
        }
    }
}

pub struct Plan {
    pub server: SocketAddr,
    pub steps: Vec<u32>,
    pub measure: Duration,
    pub warmup: Duration,
    pub shape: FlowShape,
    pub mode: Mode,
    pub credentials: CredentialSource,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub peers: usize,
    pub max_flows: u32,
    pub timeout: Duration,
}

fn host_of(server: &str) -> &str {
    // "[::1]:3478" -> "::1", "turn.example.org:443" -> "turn.example.org"
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Plan {
    pub fn new(a: &TurnProbeArgs) -> anyhow::Result<Plan> {
        let server = a
            .server
            .to_socket_addrs()
            .with_context(|| format!("resolving --server {}", a.server))?
            .next()
            .with_context(|| format!("--server {} resolves to no address", a.server))?;
        let (steps, measure) = a.steps();
        let max_flows = steps.iter().copied().max().unwrap_or(0);
        if max_flows == 0 {
            bail!("--allocations must be at least 1");
        }
        if max_flows > MAX_ALLOCATIONS {
            bail!("{max_flows} allocations is more than one probe drives ({MAX_ALLOCATIONS}); run several probes");
        }
        if measure == 0 {
            bail!("--duration/--hold must be at least 1 second");
        }
        if a.threads == 0 || a.setup_concurrency == 0 || a.timeout_ms == 0 {
            bail!("--threads, --setup-concurrency and --timeout-ms must be at least 1");
        }
        let shape = FlowShape::new(a.flow, a.pps, a.size).map_err(anyhow::Error::msg)?;
        let credentials = match (&a.secret, &a.user) {
            (Some(_), Some(_)) => bail!("give --secret or --user, not both"),
            (Some(secret), None) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                CredentialSource::Rest {
                    secret: secret.clone(),
                    expiry: now + a.rest_ttl,
                }
            }
            (None, Some(user)) => {
                let Some((username, password)) = user.split_once(':') else {
                    bail!("--user must be name:password");
                };
                CredentialSource::Static(Credentials {
                    username: username.to_string(),
                    password: password.to_string(),
                })
            }
            (None, None) => CredentialSource::None,
        };
        let tls = match a.transport {
            Transport::Tls => {
                let config = super::tls::client_config(a.insecure, a.ca_file.as_deref())?;
                let name = a
                    .sni
                    .clone()
                    .unwrap_or_else(|| host_of(&a.server).to_string());
                let name = ServerName::try_from(name.clone())
                    .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
                Some((config, name))
            }
            _ => None,
        };
        Ok(Plan {
            server,
            steps,
            measure: Duration::from_secs(measure),
            warmup: Duration::from_secs(a.warmup),
            shape,
            mode: match a.peer_mode {
                PeerMode::Echo => Mode::Echo,
                PeerMode::Sink => Mode::Sink,
            },
            credentials,
            tls,
            peers: max_flows.div_ceil(FLOWS_PER_PEER).clamp(1, MAX_PEERS) as usize,
            max_flows,
            timeout: Duration::from_millis(a.timeout_ms),
        })
    }

    /// An upper bound on the whole run, so a wedged server cannot hold the probe forever.
    pub fn budget(&self, concurrency: usize) -> Duration {
        let per_step = self.warmup + self.measure + Duration::from_secs(5);
        let setup_rounds = self.max_flows.div_ceil(concurrency.max(1) as u32);
        // Connect + Allocate twice + permission/channel, each up to `timeout`.
        let setup = self.timeout * 5 * setup_rounds;
        per_step * self.steps.len() as u32 + setup + Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TurnProbeArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("probe").chain(argv.iter().copied()))?;
        Plan::new(&cli.args)
    }

    #[test]
    fn defaults_make_a_single_audio_step() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.steps, [10]);
        assert_eq!(p.measure, Duration::from_secs(10));
        assert_eq!(p.shape.size, 160);
        assert_eq!(p.peers, 1);
        assert!(p.credentials.for_id(0).is_none());
        assert!(p.budget(32) > Duration::from_secs(11));
    }

    #[test]
    fn ramp_and_rest_credentials() {
        let p = plan(&["--ramp", "100:100:500", "--hold", "5", "--secret", "s3cret"]).unwrap();
        assert_eq!(p.steps, [100, 200, 300, 400, 500]);
        assert_eq!(p.measure, Duration::from_secs(5));
        assert_eq!(p.peers, 8);
        let c = p.credentials.for_id(7).unwrap();
        let (expiry, user) = c.username.split_once(':').unwrap();
        assert_eq!(user, "probe7");
        assert!(expiry.parse::<u64>().unwrap() > 1_700_000_000);
        assert_eq!(c.password, rest_password(b"s3cret", &c.username));
    }

    #[test]
    fn bad_arguments_are_explained() {
        let err = |argv: &[&str]| {
            plan(argv)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        assert!(err(&["--user", "nopassword"]).contains("name:password"));
        assert!(err(&["--secret", "a", "--user", "b:c"]).contains("cannot be used with"));
        assert!(err(&["--allocations", "0"]).contains("at least 1"));
        assert!(err(&["--flow", "fixed", "--size", "8"]).contains("--size"));
        assert!(err(&["--ramp", "5:0:10"]).contains("STEP"));
        assert!(err(&["--duration", "0"]).contains("at least 1 second"));
        assert!(err(&["--server", "no-port"]).contains("--server"));
    }

    #[test]
    fn tls_server_name_comes_from_the_server_host() {
        assert_eq!(host_of("[::1]:5349"), "::1");
        assert_eq!(host_of("127.0.0.1:5349"), "127.0.0.1");
        assert_eq!(host_of("turn.example.org:443"), "turn.example.org");
        let p = plan(&[
            "--transport",
            "tls",
            "--insecure",
            "--server",
            "127.0.0.1:5349",
        ])
        .unwrap();
        assert!(p.tls.is_some());
    }
}
