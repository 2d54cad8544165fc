//! Health endpoints over real sockets, on the real binary: `/healthz` and `/readyz` on the
//! TURN metrics port and on the SFU's HTTP port (503 once SIGTERM has started the drain),
//! and the SFU's admin room listing `GET /rooms` behind its bearer token.
//!
//! Relay port ranges used here: k = 45.

mod common;
#[path = "../crates/plenary-sfu/tests/common/mod.rs"]
mod sfu_common;
mod turn_proc;

use common::stun_client::*;
use common::*;
use serde_json::Value;
use sfu_common::{Client, PublishPlan};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;
use turn_proc::{http_get, http_until, Proc};

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

#[test]
fn turn_metrics_port_answers_healthz_and_readyz_until_the_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = bare_conf(dir.path(), "");
    let port = free_port();
    let ops = loopback(free_port_except(
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        &[port],
    ));
    let (min, max) = relay_range(45);
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("turn")
        .arg("--coturn-conf")
        .arg(&conf)
        .args(["--listening-port", &port.to_string()])
        .args([
            "--min-port",
            &min.to_string(),
            "--max-port",
            &max.to_string(),
        ])
        .args(["--metrics", &ops.to_string()]);
    let mut turn = Proc::spawn(cmd, dir.path(), "turn");
    turn.wait_stun(loopback(port));

    assert_eq!(http_get(ops, "/healthz", None), (200, "ok\n".into()));
    assert_eq!(http_until(ops, "/readyz", 200), (200, "ready\n".into()));
    let (status, metrics) = http_get(ops, "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("turn_total_allocations"),
        "metrics still served beside the health endpoints:\n{metrics}"
    );
    assert_eq!(http_get(ops, "/nope", None).0, 404);

    let username = format!("{}:held", unix_now() + 3600);
    let password = rest_password(BARE_SECRET, &username);
    let mut held = TurnClient::new(Transport::udp(loopback(port)), &username, &password);
    held.allocate(None).expect("allocate");
    turn.signal(libc::SIGTERM);
    assert_eq!(
        http_until(ops, "/readyz", 503),
        (503, "draining\n".into()),
        "a draining server is not ready for new sessions"
    );
    assert_eq!(
        http_get(ops, "/healthz", None).0,
        200,
        "a draining server is still healthy"
    );
    assert_eq!(held.refresh(0), Ok(0));
    let status = turn.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    assert_eq!(
        http_get(ops, "/healthz", None).0,
        0,
        "nothing answers after exit"
    );
}

const ADMIN_TOKEN: &str = "health-test-admin-token-0123456789";

async fn get(addr: SocketAddr, path: &'static str, bearer: Option<&'static str>) -> (u16, String) {
    tokio::task::spawn_blocking(move || http_get(addr, path, bearer))
        .await
        .expect("http task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sfu_http_port_answers_health_and_lists_rooms_for_the_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("token file");
    let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let http = loopback(free_port());
    let metrics = loopback(free_port_except(&lo, &[http.port()]));
    let media = loopback(free_udp_pair(lo[0]));
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("sfu")
        .args(["--http", &http.to_string(), "--media", &media.to_string()])
        .args(["--metrics", &metrics.to_string()])
        .arg("--admin-token-file")
        .arg(&token_file);
    let sfu = Proc::spawn(cmd, dir.path(), "sfu");
    let (status, _) = tokio::task::spawn_blocking(move || http_until(http, "/healthz", 200))
        .await
        .expect("poll");
    assert_eq!(status, 200, "sfu /healthz:\n{}", sfu.log());
    assert_eq!(get(http, "/readyz", None).await, (200, "ready\n".into()));

    // The listing: no token, a wrong token, then the right one.
    let (status, body) = get(http, "/rooms", None).await;
    assert_eq!(status, 401, "without a token: {body}");
    assert_eq!(
        get(http, "/rooms", Some("wrong-token-wrong-token")).await.0,
        401
    );
    let (status, body) = get(http, "/rooms", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let empty: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(empty["rooms"], Value::Array(vec![]), "{body}");

    let mut ada = Client::join(http, "assembly", "ada").await;
    ada.publish(PublishPlan::av(1, 200_000)).await;
    let _bob = Client::join(http, "assembly", "bob").await;
    let mut listed = Value::Null;
    for _ in 0..50 {
        let (status, body) = get(http, "/rooms", Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        listed = serde_json::from_str(&body).expect("JSON");
        let tracks = listed["rooms"][0]["participants"].as_array().map(|ps| {
            ps.iter()
                .map(|p| p["tracks"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        });
        if tracks == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let room = &listed["rooms"][0];
    assert_eq!(room["room"], "assembly", "{listed}");
    let people = room["participants"].as_array().expect("participants");
    let names: Vec<&str> = people.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(people.len(), 2, "{listed}");
    assert!(names.contains(&"ada") && names.contains(&"bob"), "{listed}");
    let ada_view = people.iter().find(|p| p["name"] == "ada").expect("ada");
    assert_eq!(ada_view["id"], ada.id.as_str(), "{listed}");
    assert_eq!(ada_view["kind"], "room");
    let worker = ada_view["worker"].as_u64().expect("worker");
    assert!(
        room["workers"]
            .as_array()
            .expect("workers")
            .contains(&Value::from(worker)),
        "{listed}"
    );
    let mut kinds: Vec<&str> = ada_view["tracks"]
        .as_array()
        .expect("tracks")
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["audio", "video"], "{listed}");
    // The dashboard's room gauges follow the same rooms.
    let (status, body) = get(metrics, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("plenary_sfu_rooms 1\n"), "{body}");
    assert!(body.contains("plenary_sfu_room_members 2\n"), "{body}");

    // SIGTERM: participants are still here, so the SFU drains and says it is not ready.
    sfu.signal(libc::SIGTERM);
    let (status, body) = tokio::task::spawn_blocking(move || http_until(http, "/readyz", 503))
        .await
        .expect("poll");
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert_eq!(
        get(http, "/healthz", None).await.0,
        200,
        "draining but healthy"
    );
}

#[test]
fn sfu_room_listing_is_off_without_an_admin_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = loopback(free_port());
    let media = loopback(free_udp_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("sfu")
        .args(["--http", &http.to_string(), "--media", &media.to_string()])
        .arg("--no-metrics");
    let sfu = Proc::spawn(cmd, dir.path(), "sfu");
    assert_eq!(http_until(http, "/healthz", 200).0, 200, "{}", sfu.log());
    let (status, body) = http_get(http, "/rooms", Some(ADMIN_TOKEN));
    assert_eq!(status, 403, "no token configured: {body}");
    assert!(
        body.contains("admin-token-file"),
        "says how to turn it on: {body}"
    );
}
