//! Value helpers shared by the coturn and TOML readers.

use super::ExternalIp;
use crate::policy::IpRange;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// A long-term key written as 32 hex digits, with or without `0x` (coturn's turnadmin
/// `-k` output).
pub(super) fn parse_key(text: &str) -> Option<[u8; 16]> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// `PUBLIC` or `PUBLIC/PRIVATE`, coturn's `external-ip` syntax (TOML uses it too).
pub(super) fn external_ip(s: &str) -> Result<ExternalIp, String> {
    let bad = || format!("`{s}` is not PUBLIC or PUBLIC/PRIVATE (IP addresses)");
    let (public, private) = match s.split_once('/') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    };
    let public = public.trim().parse().map_err(|_| bad())?;
    let private = match private {
        Some(q) => Some(q.trim().parse().map_err(|_| bad())?),
        None => None,
    };
    Ok(ExternalIp { public, private })
}

/// Relative paths are taken relative to the config file, as coturn does, so a config
/// directory can be moved whole.
pub(super) fn relative_to(file: &str, p: &Path) -> PathBuf {
    match Path::new(file).parent() {
        Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// Multicast in every form an allowed range could cover (IPv4, IPv4-mapped, IPv6).
pub(super) const MULTICAST: [(IpAddr, IpAddr); 3] = [
    (ip4(224, 0, 0, 0), ip4(239, 255, 255, 255)),
    (mapped(224, 0, 0, 0), mapped(239, 255, 255, 255)),
    (
        IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)),
        IpAddr::V6(Ipv6Addr::new(
            0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
        )),
    ),
];

const fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn mapped(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V6(Ipv4Addr::new(a, b, c, d).to_ipv6_mapped())
}

fn as_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

/// An address of `like`'s family from an integer known to fit it.
fn of_family(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// `ranges` with the addresses `lo..=hi` (one family) cut out.
pub(super) fn subtract(ranges: Vec<IpRange>, lo: IpAddr, hi: IpAddr) -> Vec<IpRange> {
    let (l, h) = (as_int(lo), as_int(hi));
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges {
        let (s, e) = (as_int(r.start), as_int(r.end));
        if r.start.is_ipv4() != lo.is_ipv4() || e < l || s > h {
            out.push(r);
            continue;
        }
        if s < l {
            out.push(IpRange {
                start: r.start,
                end: of_family(lo, l - 1),
            });
        }
        if e > h {
            out.push(IpRange {
                start: of_family(hi, h + 1),
                end: r.end,
            });
        }
    }
    out
}
