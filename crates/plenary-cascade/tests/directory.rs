//! The directory against a real `redis-server` on loopback, one server per test.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use plenary_cascade::directory::{spawn_presence, Directory, DirectoryError, NodeInfo};

#[path = "../../plenary-sfu/tests/common/redis.rs"]
#[allow(dead_code)]
mod redis_guard;
use redis_guard::Redis;

/// A plain connection, to look at the keys themselves.
async fn raw(r: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(r.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn node(name: &str, port: u16) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        http: format!("http://127.0.0.1:{port}"),
        cascade: SocketAddr::from(([127, 0, 0, 1], port + 1)),
        load: 3,
        max_load: 0,
        draining: false,
    }
}

fn names(nodes: &[NodeInfo]) -> Vec<&str> {
    nodes.iter().map(|n| n.name.as_str()).collect()
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn heartbeat_lists_the_node() {
    let Some(redis) = Redis::start() else { return };
    let dir = Directory::connect(&redis.url(), "plenary").await.unwrap();
    let a = node("a", 8280);
    dir.heartbeat(&a, LONG).await.unwrap();
    assert_eq!(dir.nodes().await.unwrap(), vec![a.clone()]);
    // A second beat updates the load in place.
    let a2 = NodeInfo { load: 7, ..a };
    dir.heartbeat(&a2, LONG).await.unwrap();
    assert_eq!(dir.nodes().await.unwrap(), vec![a2]);
    let mut raw = raw(&redis).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("plenary:node:a")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "{ttl}");
}

#[tokio::test]
async fn expired_node_is_swept_from_rooms_and_tracks() {
    let Some(redis) = Redis::start() else { return };
    let dir = Directory::connect(&redis.url(), "plenary").await.unwrap();
    dir.heartbeat(&node("a", 8280), Duration::from_millis(300))
        .await
        .unwrap();
    dir.heartbeat(&node("b", 8290), LONG).await.unwrap();
    dir.join_room("r1", "a").await.unwrap();
    dir.join_room("r1", "b").await.unwrap();
    dir.join_room("r2", "a").await.unwrap();
    dir.set_track("r1", "ta", "a").await.unwrap();
    dir.set_track("r1", "tb", "b").await.unwrap();
    assert_eq!(
        dir.track_owner("r1", "ta").await.unwrap().as_deref(),
        Some("a")
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(dir.sweep_dead().await.unwrap(), vec!["a".to_string()]);
    // A second sweep finds nothing left to do.
    assert!(dir.sweep_dead().await.unwrap().is_empty());
    assert_eq!(names(&dir.nodes().await.unwrap()), ["b"]);
    assert_eq!(names(&dir.room_nodes("r1").await.unwrap()), ["b"]);
    assert!(dir.room_nodes("r2").await.unwrap().is_empty());
    assert_eq!(dir.track_owner("r1", "ta").await.unwrap(), None);
    assert_eq!(
        dir.track_owner("r1", "tb").await.unwrap().as_deref(),
        Some("b")
    );

    let mut raw = raw(&redis).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("plenary:*")
        .query_async(&mut raw)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "plenary:node:b",
            "plenary:node:b:rooms",
            "plenary:nodes",
            "plenary:room:r1:nodes",
            "plenary:room:r1:tracks"
        ]
    );
    let tracks: Vec<String> = redis::cmd("HKEYS")
        .arg("plenary:room:r1:tracks")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(tracks, ["tb"]);
}

#[tokio::test]
async fn reads_drop_dead_nodes_too() {
    let Some(redis) = Redis::start() else { return };
    let dir = Directory::connect(&redis.url(), "p2").await.unwrap();
    dir.heartbeat(&node("a", 8280), Duration::from_millis(200))
        .await
        .unwrap();
    dir.heartbeat(&node("b", 8290), LONG).await.unwrap();
    dir.join_room("r", "a").await.unwrap();
    dir.set_track("r", "ta", "a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The join itself leaves the dead member out and cleans it up.
    assert_eq!(names(&dir.join_room("r", "b").await.unwrap()), ["b"]);
    assert_eq!(dir.track_owner("r", "ta").await.unwrap(), None);
    assert!(dir.sweep_dead().await.unwrap().is_empty());
    assert_eq!(names(&dir.nodes().await.unwrap()), ["b"]);
}

#[tokio::test]
async fn join_and_leave_room() {
    let Some(redis) = Redis::start() else { return };
    let dir = Directory::connect(&redis.url(), "plenary").await.unwrap();
    let (a, b) = (node("a", 8280), node("b", 8290));
    // Joining needs a live heartbeat.
    assert!(matches!(
        dir.join_room("r", "a").await,
        Err(DirectoryError::NotRegistered(n)) if n == "a"
    ));
    dir.heartbeat(&a, LONG).await.unwrap();
    dir.heartbeat(&b, LONG).await.unwrap();
    assert_eq!(dir.join_room("r", "a").await.unwrap(), vec![a.clone()]);
    assert_eq!(
        dir.join_room("r", "b").await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        dir.room_nodes("r").await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert!(dir.room_nodes("other").await.unwrap().is_empty());

    dir.set_track("r", "ta", "a").await.unwrap();
    dir.set_track("r", "tb", "b").await.unwrap();
    dir.leave_room("r", "a").await.unwrap();
    assert_eq!(dir.room_nodes("r").await.unwrap(), vec![b.clone()]);
    // Leaving takes the node's tracks in that room with it.
    assert_eq!(dir.track_owner("r", "ta").await.unwrap(), None);
    assert_eq!(
        dir.track_owner("r", "tb").await.unwrap().as_deref(),
        Some("b")
    );
    // a is still alive.
    assert_eq!(names(&dir.nodes().await.unwrap()), ["a", "b"]);

    // Names that could forge another key are refused.
    assert!(matches!(
        dir.join_room("r", "a:rooms").await,
        Err(DirectoryError::BadName { .. })
    ));
    assert!(matches!(
        dir.join_room("", "a").await,
        Err(DirectoryError::BadName { .. })
    ));
}

#[tokio::test]
async fn tracks_set_clear_owner() {
    let Some(redis) = Redis::start() else { return };
    let dir = Directory::connect(&redis.url(), "plenary").await.unwrap();
    dir.heartbeat(&node("a", 8280), LONG).await.unwrap();
    dir.heartbeat(&node("b", 8290), LONG).await.unwrap();
    assert_eq!(dir.track_owner("r", "t1").await.unwrap(), None);
    dir.set_track("r", "t1", "a").await.unwrap();
    assert_eq!(
        dir.track_owner("r", "t1").await.unwrap().as_deref(),
        Some("a")
    );
    // Re-homed track: the new owner replaces the old one.
    dir.set_track("r", "t1", "b").await.unwrap();
    assert_eq!(
        dir.track_owner("r", "t1").await.unwrap().as_deref(),
        Some("b")
    );
    dir.clear_track("r", "t1").await.unwrap();
    assert_eq!(dir.track_owner("r", "t1").await.unwrap(), None);
    // Clearing what is not there is fine.
    dir.clear_track("r", "t1").await.unwrap();
}

#[tokio::test]
async fn remove_node_removes_everything() {
    let Some(redis) = Redis::start() else { return };
    let dir = Directory::connect(&redis.url(), "plenary").await.unwrap();
    dir.heartbeat(&node("a", 8280), LONG).await.unwrap();
    dir.heartbeat(&node("b", 8290), LONG).await.unwrap();
    for room in ["r1", "r2"] {
        dir.join_room(room, "a").await.unwrap();
        dir.join_room(room, "b").await.unwrap();
        dir.set_track(room, "ta", "a").await.unwrap();
        dir.set_track(room, "tb", "b").await.unwrap();
    }
    dir.remove_node("a").await.unwrap();
    assert_eq!(names(&dir.nodes().await.unwrap()), ["b"]);
    for room in ["r1", "r2"] {
        assert_eq!(names(&dir.room_nodes(room).await.unwrap()), ["b"]);
        assert_eq!(dir.track_owner(room, "ta").await.unwrap(), None);
        assert_eq!(
            dir.track_owner(room, "tb").await.unwrap().as_deref(),
            Some("b")
        );
    }
    let mut raw = raw(&redis).await;
    let left: i64 = redis::cmd("EXISTS")
        .arg("plenary:node:a")
        .arg("plenary:node:a:rooms")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // Removing an unknown node is a no-op.
    dir.remove_node("zz").await.unwrap();
}

#[tokio::test]
async fn bad_url() {
    for url in ["http://x", "rediss://127.0.0.1:1", "redis://127.0.0.1"] {
        match Directory::connect(url, "plenary").await {
            Err(DirectoryError::BadUrl(u)) => assert_eq!(u, url),
            other => panic!("{url}: {other:?}"),
        }
    }
    let e = Directory::connect("http://x", "plenary").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad directory URL http://x: expected redis://HOST:PORT[/DB]"
    );
}

#[tokio::test]
async fn connect_to_nothing_is_unreachable_quickly() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Instant::now();
    let e = Directory::connect(&format!("redis://127.0.0.1:{port}"), "plenary")
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn redis_down_then_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let dir = Directory::connect(&redis.url(), "plenary").await.unwrap();
    let a = node("a", 8280);
    dir.heartbeat(&a, LONG).await.unwrap();

    redis.kill();
    for _ in 0..3 {
        let t = Instant::now();
        let e = dir.heartbeat(&a, LONG).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(e.is_unreachable(), "{e}");
        assert!(e
            .to_string()
            .starts_with("directory unreachable at redis://127.0.0.1:"));
        let t = Instant::now();
        let e = dir.join_room("r", "a").await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(e.is_unreachable(), "{e}");
    }

    redis.launch();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match dir.heartbeat(&a, LONG).await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "no reconnect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dir.join_room("r", "a").await.unwrap(), vec![a]);
}

#[tokio::test]
async fn presence_beats_reports_and_cleans_up() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let dir = Directory::connect(&redis.url(), "plenary").await.unwrap();
    // Left behind by a crashed earlier run of "a": presence clears it before the first beat.
    dir.heartbeat(&node("a", 8280), LONG).await.unwrap();
    dir.join_room("stale", "a").await.unwrap();

    let me = node("a", 8280);
    let presence = spawn_presence(dir.clone(), move || me.clone(), Duration::from_millis(100));
    assert!(presence.wait_up(Duration::from_secs(2)).await);
    assert!(dir.room_nodes("stale").await.unwrap().is_empty());
    assert_eq!(names(&dir.nodes().await.unwrap()), ["a"]);
    let regs = presence.registrations();
    assert_eq!(*regs.borrow(), 1);

    // A node that stopped beating is swept by a's presence within its TTL plus a few beats.
    dir.heartbeat(&node("b", 8290), Duration::from_millis(200))
        .await
        .unwrap();
    dir.join_room("r", "b").await.unwrap();
    let mut raw = raw(&redis).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let members: i64 = redis::cmd("SCARD")
            .arg("plenary:nodes")
            .query_async(&mut raw)
            .await
            .unwrap();
        let room: i64 = redis::cmd("EXISTS")
            .arg("plenary:room:r:nodes")
            .query_async(&mut raw)
            .await
            .unwrap();
        if members == 1 && room == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "b not swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(2);
    while presence.up() {
        assert!(Instant::now() < deadline, "still up with Redis gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Redis comes back empty: the node re-registers and says so.
    redis.launch();
    assert!(presence.wait_up(Duration::from_secs(5)).await);
    assert_eq!(*regs.borrow(), 2);
    assert_eq!(names(&dir.nodes().await.unwrap()), ["a"]);

    presence.stop().await;
    assert!(dir.nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn hung_redis_does_not_block_the_caller() {
    let Some(redis) = Redis::start() else { return };
    let dir = Directory::connect(&redis.url(), "plenary").await.unwrap();
    let a = node("a", 8280);
    dir.heartbeat(&a, LONG).await.unwrap();
    let pid = redis.pid().unwrap().to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };

    signal("-STOP");
    let t = Instant::now();
    let e = dir.nodes().await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(e.is_unreachable(), "{e}");

    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match dir.nodes().await {
            Ok(nodes) => {
                assert_eq!(nodes, vec![a]);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "not back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
