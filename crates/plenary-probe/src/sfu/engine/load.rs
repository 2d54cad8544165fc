//! What the probe measures about itself and its host: CPU of named threads, socket drops
//! from `/proc/net/udp`, and CPU pinning. A probe that cannot keep up looks exactly like a
//! slow server, so these decide whether a step is valid.

use std::collections::HashMap;
use std::os::fd::AsRawFd;

/// The inode of a socket, the key `/proc/net/udp` lists it under.
pub fn socket_inode(s: &impl AsRawFd) -> Option<u64> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, which is a valid, owned stat buffer.
    let rc = unsafe { libc::fstat(s.as_raw_fd(), &mut st) };
    (rc == 0).then_some(st.st_ino)
}

/// `inode -> drops` from the text of `/proc/net/udp` or `udp6` (the last column; inode is
/// the 10th field).
pub fn parse_udp_drops(text: &str, out: &mut HashMap<u64, u64>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 13 {
            continue;
        }
        if let (Ok(inode), Ok(drops)) = (f[9].parse::<u64>(), f[f.len() - 1].parse::<u64>()) {
            out.insert(inode, drops);
        }
    }
}

/// Drops per socket inode in the calling thread's network namespace.
pub fn udp_drops() -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for f in ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(f) {
            parse_udp_drops(&text, &mut out);
        }
    }
    out
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
pub fn threads_cpu(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0.0;
    for e in dir.flatten() {
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(p.join("stat")) {
            total += crate::procfs::parse_stat_cpu(&stat).unwrap_or(0.0);
        }
    }
    total
}

/// Thread ids of this process whose name starts with `prefix`.
pub fn thread_ids(prefix: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return vec![];
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|n| n.trim_end().starts_with(prefix))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Pins thread `tid` (0: the calling thread) to `cpus`.
pub fn pin(tid: i32, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Online CPUs.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_udp() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123456 2 0000000000000000 17\n\
          2: 0100007F:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0\n\
          garbage\n";
        let mut m = HashMap::new();
        parse_udp_drops(text, &mut m);
        assert_eq!(m.get(&123456), Some(&17));
        assert_eq!(m.get(&777), Some(&0));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn finds_this_sockets_row() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(&s).unwrap();
        assert_eq!(udp_drops().get(&inode), Some(&0));
        assert!(threads_cpu("") >= 0.0);
        assert!(!thread_ids("").is_empty());
    }
}
