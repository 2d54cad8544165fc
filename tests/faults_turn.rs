//! Faults `plenary turn` must survive (issue 14, item 2), each over real sockets on
//! loopback against the real binary: a 2 s SIGSTOP, clients that vanish mid-TLS, 10,000
//! half-open TCP and TLS connections, relay port exhaustion, and the file descriptor limit.
//!
//! Every test asserts the four things the issue expects: the service keeps answering (a
//! fresh Allocate succeeds), an allocation made before the fault keeps relaying, one
//! rate-limited log line names the cause (the child's log), and a metric counts it (the
//! Prometheus endpoint).
//!
//! Relay port ranges used here: k = 50..=54.

mod common;
mod faults_common;
#[path = "faults_common/turn.rs"]
mod turn_harness;
mod turn_proc;

use common::stun_client::*;
use faults_common::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use turn_harness::*;

/// One fault at a time: each test loads the machine (10,000 connections, floods) or
/// measures the server (CPU at the fd limit, stalls), so they must not overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn sigstop_for_two_seconds_then_sigcont_resumes_allocations() {
    let _serial = serial();
    let mut turn = Turn::start(Opts::new(50));
    let echo = echo_peer();
    let mut held = relaying_allocation(&turn, "held", &echo);

    turn.proc.signal(libc::SIGSTOP);
    // Sent while the server is stopped: queued by the kernel, answered after SIGCONT.
    let mut during = turn.client("during", Transport::udp(turn.addr()));
    std::thread::sleep(Duration::from_secs(2));
    turn.proc.signal(libc::SIGCONT);

    assert!(
        during.allocate(None).is_ok(),
        "Allocate sent during the stop"
    );
    assert!(
        round_trip(&mut held, &echo, "after"),
        "the allocation made before SIGSTOP no longer relays"
    );
    fresh_allocations_work(&turn, "after-sigcont");
    assert!(turn.proc.is_alive(), "server died");

    let stalls = turn.wait_metric("plenary_turn_stalls_total", 1.0);
    assert!(stalls >= 1.0, "plenary_turn_stalls_total = {stalls}");
    let lines = turn.log_lines("the process did not run for");
    assert!(
        (1..=3).contains(&lines),
        "{lines} stall lines:\n{}",
        turn.proc.log()
    );
}

#[test]
fn clients_vanishing_mid_tls_handshake_are_dropped_after_the_handshake_timeout() {
    let _serial = serial();
    const VANISHED: usize = 50;
    let turn = Turn::start(Opts {
        tls: true,
        ..Opts::new(51)
    });
    let echo = echo_peer();
    let mut held = relaying_allocation(&turn, "held", &echo);
    let config = tls_client_config(&turn.cert_der);
    let started = Instant::now();
    let mut vanished: Vec<TcpStream> = (0..VANISHED)
        .map(|_| vanish_mid_handshake(turn.tls_addr(), &config))
        .collect();

    // Meanwhile a complete TLS client is served, and the allocation relays.
    let tls = tls_connect(turn.tls_addr(), &config);
    let mut full = turn.client("full-tls", Transport::stream(Box::new(tls)));
    assert!(
        full.allocate(None).is_ok(),
        "Allocate over a complete TLS connection"
    );
    assert!(
        round_trip(&mut held, &echo, "during"),
        "relay during the fault"
    );

    let limit = Duration::from_secs(HANDSHAKE_TIMEOUT_S + 4);
    for (i, s) in vanished.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, limit.saturating_sub(started.elapsed())),
            "half-done handshake {i} still open {:?} after it started",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(HANDSHAKE_TIMEOUT_S) - Duration::from_millis(200),
        "closed before the handshake timeout"
    );
    let timeouts = turn.wait_metric("plenary_turn_tls_handshake_timeouts_total", VANISHED as f64);
    assert!(
        timeouts >= VANISHED as f64,
        "plenary_turn_tls_handshake_timeouts_total = {timeouts}"
    );
    let lines = turn.log_lines("TLS handshake not finished in time");
    assert!(
        (1..VANISHED).contains(&lines),
        "{lines} log lines for {VANISHED} timeouts: the log is not rate-limited"
    );
    assert!(
        round_trip(&mut held, &echo, "after"),
        "relay after the fault"
    );
    fresh_allocations_work(&turn, "after-vanish");
}

#[test]
fn ten_thousand_half_open_tcp_and_tls_connections_are_closed_and_counted() {
    let _serial = serial();
    let total = half_open_count();
    let turn = Turn::start(Opts {
        tls: true,
        ..Opts::new(52)
    });
    let echo = echo_peer();
    let mut held = relaying_allocation(&turn, "held", &echo);

    // Half plain TCP that never sends a byte, half TLS that stops after the record header
    // and the first bytes of a ClientHello.
    let tls_start = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let rss_idle = rss_kib(turn.proc.pid());
    let started = Instant::now();
    let mut conns = open_half_open(turn.addr(), total / 2, &[]);
    conns.extend(open_half_open(
        turn.tls_addr(),
        total - total / 2,
        &tls_start,
    ));
    eprintln!("{total} half-open connections in {:?}", started.elapsed());

    // The server keeps answering while it holds them.
    fresh_allocations_work(&turn, "while-held");
    assert!(
        round_trip(&mut held, &echo, "while-held"),
        "relay while held"
    );
    // The control thread sets the gauge once a second.
    let peak = turn.wait_metric("plenary_turn_connections", total as f64);
    let rss_held = rss_kib(turn.proc.pid());
    eprintln!(
        "server: {peak} connections open (gauge), {} fds, RSS {rss_idle} KiB idle, {rss_held} \
         KiB held ({:.1} KiB per connection)",
        turn.open_fds(),
        rss_held.saturating_sub(rss_idle) as f64 / total as f64
    );

    // All closed after the timeouts, by the server.
    let limit = Duration::from_secs(IDLE_TIMEOUT_S + 10);
    let closed = conns
        .iter_mut()
        .map(|s| closed_by_server(s, limit.saturating_sub(started.elapsed())))
        .filter(|closed| *closed)
        .count();
    assert_eq!(closed, total, "connections the server closed");
    eprintln!(
        "all closed by the server {:?} after the first",
        started.elapsed()
    );
    drop(conns);
    let idle = turn.wait_metric(
        "plenary_turn_connections_idle_closed_total",
        (total / 2) as f64,
    );
    let handshakes = turn.wait_metric(
        "plenary_turn_tls_handshake_timeouts_total",
        (total - total / 2) as f64,
    );
    assert!(idle >= (total / 2) as f64, "idle closed: {idle}");
    assert!(
        handshakes >= (total - total / 2) as f64,
        "TLS handshake timeouts: {handshakes}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&turn.scrape(), "plenary_turn_connections") > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(&turn.scrape(), "plenary_turn_connections"),
        0.0,
        "connection gauge back to idle"
    );
    let idle_lines = turn.log_lines("connection silent too long");
    let tls_lines = turn.log_lines("TLS handshake not finished in time");
    eprintln!("log lines: {idle_lines} idle closes, {tls_lines} handshake timeouts");
    assert!(
        (1..total / 20).contains(&idle_lines),
        "idle lines: {idle_lines}"
    );
    assert!(
        (1..total / 20).contains(&tls_lines),
        "TLS lines: {tls_lines}"
    );
    assert!(
        round_trip(&mut held, &echo, "after"),
        "relay after the fault"
    );
    fresh_allocations_work(&turn, "after-half-open");
}

#[test]
fn relay_port_exhaustion_answers_508_and_other_clients_keep_working() {
    let _serial = serial();
    const PORTS: u16 = 4;
    let turn = Turn::start(Opts {
        relay_ports: PORTS,
        ..Opts::new(53)
    });
    let echo = echo_peer();
    let mut held = relaying_allocation(&turn, "held", &echo);
    let mut others: Vec<TurnClient> = (1..PORTS)
        .map(|i| {
            let mut c = turn.client(&format!("fill{i}"), Transport::udp(turn.addr()));
            c.allocate(None).expect("allocation within the range");
            c
        })
        .collect();
    for i in 0..20 {
        let mut c = turn.client(&format!("over{i}"), Transport::udp(turn.addr()));
        assert_eq!(c.allocate(None), Err(508), "allocation beyond the range");
    }
    assert!(
        round_trip(&mut held, &echo, "full"),
        "relay with the range full"
    );
    assert!(
        udp_binding(turn.addr(), Duration::from_secs(5)).is_some(),
        "Binding with the range full"
    );
    let refused = turn.wait_metric(
        "plenary_turn_allocations_refused_total{reason=\"ports\"}",
        20.0,
    );
    assert!(refused >= 20.0, "refused (ports): {refused}");
    let lines = turn.log_lines("relay port range exhausted");
    assert!(
        (1..20).contains(&lines),
        "{lines} log lines for 20 refusals:\n{}",
        turn.proc.log()
    );
    // A port given back is usable again.
    others.pop().expect("one").refresh(0).expect("deallocate");
    let mut again = turn.client("again", Transport::udp(turn.addr()));
    again
        .allocate(None)
        .expect("allocation after one was released");
}

#[test]
fn fd_limit_reached_keeps_udp_serving_without_spinning_and_recovers() {
    let _serial = serial();
    // Enough descriptors to start (one worker) and hold a relay socket, not many more.
    const NOFILE: u64 = 64;
    let started = Instant::now();
    let mut turn = Turn::start(Opts {
        nofile: Some(NOFILE),
        // Accepted silent connections must stay for the whole test, not time out.
        idle_timeout_s: 60,
        ..Opts::new(54)
    });
    let echo = echo_peer();
    let mut held = relaying_allocation(&turn, "held", &echo);
    let base = turn.open_fds();
    assert!(
        (base as u64) < NOFILE - 4,
        "server uses {base} of {NOFILE} descriptors at start"
    );
    eprintln!("server holds {base} descriptors of {NOFILE} at start");

    // More silent connections than descriptors left: accept fails with EMFILE.
    let conns = open_half_open(turn.addr(), NOFILE as usize - base + 32, &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while (turn.open_fds() as u64) < NOFILE - 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give or take the descriptor a thread may be closing or opening just then.
    assert!(
        turn.open_fds() as u64 >= NOFILE - 1,
        "server at {} of its {NOFILE} descriptors",
        turn.open_fds()
    );
    let cpu0 = turn.cpu_seconds();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = turn.cpu_seconds() - cpu0;
    eprintln!("server CPU at the fd limit: {cpu:.2} s in 2 s");
    // A spinning accept loop burns the whole 2 s; backing off costs almost nothing.
    assert!(cpu < 0.5, "accept loop spins: {cpu:.2} CPU-s in 2 s");

    // UDP needs no new descriptor: Binding and the running relay keep working, and a new
    // allocation is refused cleanly (no socket for its relay).
    assert!(
        udp_binding(turn.addr(), Duration::from_secs(5)).is_some(),
        "Binding at the fd limit"
    );
    assert!(
        round_trip(&mut held, &echo, "at-limit"),
        "relay at the fd limit"
    );
    let mut at_limit = turn.client("at-limit", Transport::udp(turn.addr()));
    let code = at_limit.allocate(None);
    let reason = at_limit.last.as_ref().map(error_reason).unwrap_or_default();
    assert_eq!(code, Err(508), "Allocate at the fd limit: {reason}");
    eprintln!("Allocate at the fd limit: 508 {reason}");
    assert!(turn.proc.is_alive(), "server died at the fd limit");
    for cause in [
        "accept failed: out of file descriptors",
        "relay socket not opened: out of file descriptors",
    ] {
        assert!(
            turn.log_lines(cause) >= 1,
            "no log line says `{cause}`:\n{}",
            turn.proc.log()
        );
    }

    // Descriptors given back: everything works again, and the metrics tell what happened.
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(10);
    while turn.open_fds() as u64 > NOFILE - 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    fresh_allocations_work(&turn, "after-fd-limit");
    assert!(
        round_trip(&mut held, &echo, "after"),
        "relay after the fd limit"
    );
    // Workers push their counters once a second.
    let accept_errors = turn.wait_metric("plenary_turn_accept_errors_total", 1.0);
    let open_failed = turn.wait_metric("plenary_turn_relay_open_failed_total", 1.0);
    let refused = turn.wait_metric(
        "plenary_turn_allocations_refused_total{reason=\"ports\"}",
        1.0,
    );
    eprintln!(
        "accept errors {accept_errors}, relay sockets not opened {open_failed}, \
         allocations refused {refused}"
    );
    assert!(accept_errors >= 1.0, "accept errors not counted");
    assert!(open_failed >= 1.0, "relay open failure not counted");
    assert!(refused >= 1.0, "the 508 is not counted");
    // At most one warning per second per kind (accept, relay) over the test's seconds,
    // where an unlimited log would have one line per failed accept (20 a second).
    let secs = started.elapsed().as_secs() as usize + 1;
    let fd_lines = turn.log_lines("out of file descriptors");
    assert!(
        fd_lines <= 2 * secs,
        "{fd_lines} fd-limit lines in {secs} s: not rate-limited"
    );
}
