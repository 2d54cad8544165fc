//! CPU time and memory of a process from `/proc`, for "work per CPU-second" (DESIGN.md,
//! "How performance is measured"). Parsing is separate from reading so it is tested on
//! canned text.

use std::io;

/// /proc reports CPU time in clock ticks of USER_HZ, which the kernel fixes at 100 on every
/// architecture Plenary targets (x86, arm, riscv), whatever CONFIG_HZ is.
const USER_HZ: f64 = 100.0;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
    /// Resident set size now, KiB.
    pub rss_kb: Option<u64>,
    /// Peak resident set size (VmHWM), KiB.
    pub peak_rss_kb: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("/proc/PID/stat has no ')' closing the command name")]
    NoCommEnd,
    #[error("/proc/PID/stat has too few fields")]
    TooFewFields,
    #[error("/proc/PID/stat field {0} is not a number")]
    NotANumber(usize),
}

/// utime + stime in seconds from the text of `/proc/PID/stat`. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_stat_cpu(stat: &str) -> Result<f64, ParseError> {
    let end = stat.rfind(')').ok_or(ParseError::NoCommEnd)?;
    // After ')': field 3 (state) is index 0, so utime (14) is index 11 and stime (15) 12.
    let mut fields = stat[end + 1..].split_ascii_whitespace().skip(11);
    let mut num = |field: usize| -> Result<u64, ParseError> {
        fields
            .next()
            .ok_or(ParseError::TooFewFields)?
            .parse()
            .map_err(|_| ParseError::NotANumber(field))
    };
    let utime = num(14)?;
    let stime = num(15)?;
    Ok((utime + stime) as f64 / USER_HZ)
}

/// A `Name:   1234 kB` line of `/proc/PID/status`.
pub fn parse_status_kb(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_ascii_whitespace().next()?.parse().ok()
    })
}

/// Samples `/proc/PID` (`None`: this process).
pub fn sample(pid: Option<u32>) -> io::Result<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let cpu_seconds =
        parse_stat_cpu(&stat).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    Ok(ProcSample {
        cpu_seconds,
        rss_kb: parse_status_kb(&status, "VmRSS"),
        peak_rss_kb: parse_status_kb(&status, "VmHWM"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (turn server) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
        250 75 0 0 20 0 4 0 123456 98765432 2048 18446744073709551615 1 1 0 0 0 0 0 4096 \
        17920 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_cpu_is_utime_plus_stime() {
        assert_eq!(parse_stat_cpu(STAT), Ok(3.25));
    }

    #[test]
    fn stat_errors_do_not_panic() {
        assert_eq!(parse_stat_cpu("1 (x S 1"), Err(ParseError::NoCommEnd));
        assert_eq!(parse_stat_cpu("1 (x) S 1 2"), Err(ParseError::TooFewFields));
        let bad = STAT.replace(" 250 ", " x ");
        assert_eq!(parse_stat_cpu(&bad), Err(ParseError::NotANumber(14)));
    }

    #[test]
    fn status_lines() {
        let status = "Name:\tturnserver\nVmPeak:\t  300000 kB\nVmHWM:\t   12345 kB\n\
                      VmRSS:\t   11000 kB\nThreads:\t4\n";
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(11000));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(parse_status_kb(status, "Vm"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(None).expect("/proc/self");
        assert!(s.cpu_seconds >= 0.0);
        assert!(s.peak_rss_kb.unwrap_or(1) > 0);
    }
}
