//! Shared by the fault tests (`faults_turn`, `faults_sfu`): reading a child's metrics,
//! descriptors and CPU, file descriptor limits, and crowds of half-open connections.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// The sum of every series of `series` (`name`, or `name{label="v"}` for one) in a
/// Prometheus text exposition.
pub fn metric(body: &str, series: &str) -> f64 {
    let prefix = format!("{series}{{");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| *key == series || (!series.contains('{') && key.starts_with(&prefix)))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Lines of `log` that contain `needle`.
pub fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// CPU (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // After the command name (which may hold spaces and parentheses): utime is the 12th
    // field, stime the 13th.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// Descriptors a process holds.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Sets RLIMIT_NOFILE (soft and hard) of the child before it runs.
pub fn limit_nofile(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only setrlimit(2) runs, which is async-signal-safe and
    // reads only the struct on this closure's stack.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Raises this process's RLIMIT_NOFILE to its hard limit (children started later inherit
/// it); returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    lim.rlim_cur
}

/// How many half-open connections a test can hold, both ends in this machine's limits:
/// 10,000 (the figure) unless RLIMIT_NOFILE is lower, which is said loudly.
pub fn half_open_count() -> usize {
    let limit = raise_nofile();
    // Each connection costs a descriptor here and one in the server: keep 500 spare.
    let n = 10_000.min(limit.saturating_sub(500) as usize);
    assert!(n >= 1000, "RLIMIT_NOFILE {limit} is too low for this test");
    if n < 10_000 {
        eprintln!("!!!!!!!! RLIMIT_NOFILE is {limit}: {n} half-open connections, not 10,000");
    }
    n
}

/// Opens `n` connections to `addr`, each sending `first` (possibly nothing), then nothing
/// more. A connect the kernel does not complete (a full backlog) is retried.
pub fn open_half_open(addr: SocketAddr, n: usize, first: &[u8]) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(30);
    while v.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} connections to {addr} opened",
            v.len()
        );
        match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(mut s) => {
                if !first.is_empty() {
                    s.write_all(first).expect("first bytes");
                }
                v.push(s);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    v
}

/// Whether the server closed `s` within `limit` (EOF or reset), reading whatever it sends
/// meanwhile.
pub fn closed_by_server(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = s.set_read_timeout(Some(
            left.clamp(Duration::from_millis(1), Duration::from_millis(200)),
        ));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        if left.is_zero() {
            return false;
        }
    }
}

/// Polls `value` every 200 ms until it reaches `at_least` or 10 s pass; the last value.
pub fn wait_at_least(at_least: f64, mut value: impl FnMut() -> f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = value();
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
