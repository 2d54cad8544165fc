//! A cascade node killed with SIGKILL: three real `plenary sfu` processes (nodes a, b, c) on
//! 127.0.0.1 with a real redis-server as their directory, and synthetic room-API clients
//! (the SFU crate's test clients: str0m peers plus a WebSocket).
//!
//! ada publishes on a, cleo on c watches ada's video, bob publishes on b. Then b is killed:
//! cleo's video must not stop, ada must see bob leave, b's directory entries must go, and bob
//! re-homes to the next node of his `joined.nodes` list, where ada hears and sees him again.
//! Finally b restarts with the same name and ports and serves the room again.

mod common;
#[path = "../crates/plenary-sfu/tests/common/mod.rs"]
mod sfu_common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cascade_node::{free_ports, Node};
use serde_json::Value;
use sfu_common::redis::Redis;
use sfu_common::{eventually, Client, PublishPlan};
use str0m::media::MediaKind;

const SEC: Duration = Duration::from_secs(1);
const ROOM: &str = "kill";
const SECRET: &str = "cluster-secret-for-the-kill-test-0123";
/// The whole test, whatever happens; its guards kill what it started.
const WHOLE_TEST: Duration = Duration::from_secs(55);

/// Bounds of the scenario, from the SIGKILL.
const LEFT_WITHIN: Duration = Duration::from_secs(5);
const AUDIO_WITHIN: Duration = Duration::from_secs(5);
const VIDEO_WITHIN: Duration = Duration::from_secs(7);
const DIRECTORY_WITHIN: Duration = Duration::from_secs(10);
/// Longest silence on a surviving viewer's video across the kill.
const MAX_GAP: Duration = Duration::from_secs(1);
/// How long after the kill that viewer is watched: past the 3 s link timeout and the sweep.
const GAP_WINDOW: Duration = Duration::from_secs(6);

/// `redis-cli -p PORT ARGS...` (bounded to 5 s); one output line per reply element.
fn redis_cli(port: u16, args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .args(args);
    let (out, timed_out) = common::run_with_timeout(cmd, 5 * SEC);
    assert!(!timed_out, "redis-cli {args:?} hung");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// What the directory still holds of node `node`; empty once it is gone.
fn directory_entries(port: u16, node: &str) -> Vec<String> {
    let mut left = Vec::new();
    let prefix = "plenary";
    for key in [
        format!("{prefix}:node:{node}"),
        format!("{prefix}:node:{node}:rooms"),
    ] {
        if redis_cli(port, &["EXISTS", &key]) != ["0"] {
            left.push(key);
        }
    }
    for set in [
        format!("{prefix}:nodes"),
        format!("{prefix}:room:{ROOM}:nodes"),
    ] {
        if redis_cli(port, &["SMEMBERS", &set])
            .iter()
            .any(|m| m == node)
        {
            left.push(format!("{node} in {set}"));
        }
    }
    let tracks = format!("{prefix}:room:{ROOM}:tracks");
    let owned = redis_cli(port, &["HVALS", &tracks])
        .iter()
        .filter(|o| *o == node)
        .count();
    if owned > 0 {
        left.push(format!("{owned} track(s) owned by {node} in {tracks}"));
    }
    left
}

/// Ids the client's node gave participants called `name` (from `joined` and
/// `participant_joined`; one name may have several ids after a rejoin).
fn ids_of(c: &Client, name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for v in c.log() {
        if v["type"] == "joined" {
            for p in v["participants"].as_array().into_iter().flatten() {
                if p["name"] == name {
                    ids.extend(p["id"].as_str().map(str::to_owned));
                }
            }
        }
        if v["type"] == "participant_joined" && v["name"] == name {
            ids.extend(v["participant"].as_str().map(str::to_owned));
        }
    }
    ids
}

async fn wait_id(c: &Client, name: &str) -> String {
    let ok = eventually(5 * SEC, || !ids_of(c, name).is_empty()).await;
    assert!(ok, "{} never saw {name}: {:?}", c.id, c.log());
    ids_of(c, name).remove(0)
}

/// Arrival times of `c`'s received audio packets from the publisher tagged `tag`.
fn audio_from(c: &Client, tag: u8) -> Vec<Instant> {
    c.sub
        .shared
        .records()
        .into_iter()
        .filter(|r| r.kind == MediaKind::Audio && r.tag == tag)
        .map(|r| r.at)
        .collect()
}

/// Arrival times of the video packets on `mid` tagged `tag`.
fn video_on(c: &Client, mid: &str, tag: u8) -> Vec<Instant> {
    c.sub
        .shared
        .records_on(mid)
        .into_iter()
        .filter(|r| r.tag == tag)
        .map(|r| r.at)
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_surviving_media_and_its_participants_rehome() {
    let Some(redis) = Redis::start() else { return };
    if common::require_peer("redis-cli").is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(9);
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .zip(ports.chunks(3))
        .map(|(name, p)| Node::new(name, [p[0], p[1], p[2]], dir.path(), &redis.url(), SECRET))
        .collect();
    let run = scenario(&mut nodes, redis.port);
    match tokio::time::timeout(WHOLE_TEST, run).await {
        Ok(()) => {}
        Err(_) => panic!("the scenario did not finish within {WHOLE_TEST:?}"),
    }
}

async fn scenario(nodes: &mut [Node], redis_port: u16) {
    for n in nodes.iter_mut() {
        n.start().await;
    }
    let (a, b, c) = (nodes[0].http, nodes[1].http, nodes[2].http);

    // ada publishes on a; cleo on c watches her video; bob publishes on b.
    let mut ada = Client::join(a, ROOM, "ada").await;
    ada.publish(PublishPlan::av(1, 300_000)).await;
    let cleo = Client::join(c, ROOM, "cleo").await;
    let ada_on_c = wait_id(&cleo, "ada").await;
    let ada_video = cleo.wait_track(&ada_on_c, "video").await;
    let cleo_slot = cleo.subscribe(&ada_video, None).await;
    let mut bob = Client::join(b, ROOM, "bob").await;
    bob.publish(PublishPlan::av(2, 300_000)).await;
    bob.set_talking(true);
    let bob_on_a = wait_id(&ada, "bob").await;
    let bob_video = ada.wait_track(&bob_on_a, "video").await;
    let old_slot = ada.subscribe(&bob_video, None).await;
    for cl in [&ada, &cleo, &bob] {
        cl.wait_connected().await;
    }
    let flowing = eventually(10 * SEC, || {
        video_on(&cleo, &cleo_slot, 1).len() >= 60
            && video_on(&ada, &old_slot, 2).len() >= 60
            && audio_from(&ada, 2).len() >= 25
    })
    .await;
    assert!(
        flowing,
        "before the kill: cleo got {} video packets from ada, ada got {} video and {} audio from bob",
        video_on(&cleo, &cleo_slot, 1).len(),
        video_on(&ada, &old_slot, 2).len(),
        audio_from(&ada, 2).len()
    );
    let joined = bob.of_type("joined").remove(0);
    let list: Vec<String> = joined["nodes"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    eprintln!("bob's joined.nodes on b: {list:?}");
    assert_eq!(
        list.len(),
        3,
        "joined.nodes should list a, b and c: {joined}"
    );
    assert!(list.contains(&nodes[1].url()), "{list:?}");
    assert!(
        directory_entries(redis_port, "b").len() >= 3,
        "b is not in the directory before the kill: {:?}",
        redis_cli(redis_port, &["KEYS", "*"])
    );

    // kill -9 b.
    let killed = Instant::now();
    nodes[1].kill9();
    eprintln!("killed node b");

    // bob's client sees its WebSocket close and rejoins at the next node of its list.
    let closed = eventually(3 * SEC, || !bob.ws_open()).await;
    assert!(closed, "bob's WebSocket to the killed node stayed open");
    let noticed = killed.elapsed();
    let pos = list.iter().position(|u| *u == nodes[1].url()).unwrap_or(0);
    let next = list[(pos + 1) % list.len()].clone();
    let next_addr: SocketAddr = next
        .strip_prefix("http://")
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("not a base URL: {next}"));
    let new_home = nodes
        .iter()
        .find(|n| n.http == next_addr)
        .map_or("?".to_owned(), |n| n.name.clone());
    drop(bob);
    let mut bob = Client::join(next_addr, ROOM, "bob").await;
    bob.publish(PublishPlan::av(3, 300_000)).await;
    bob.set_talking(true);
    let rejoined = killed.elapsed();
    eprintln!(
        "bob noticed the kill after {}, rejoined on node {new_home} ({next}) {} after the kill",
        secs(noticed),
        secs(rejoined)
    );

    // The directory forgets b (checked on another thread, so the waits below are not slowed).
    let sweep = std::thread::spawn(move || {
        let mut left = Vec::new();
        while killed.elapsed() < DIRECTORY_WITHIN + 2 * SEC {
            left = directory_entries(redis_port, "b");
            if left.is_empty() {
                return Ok(killed.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(left)
    });

    // ada: bob (old) leaves; bob (new) is heard, then seen.
    let mut left_at = None;
    let mut new_slot: Option<String> = None;
    let deadline = killed + VIDEO_WITHIN + 3 * SEC;
    loop {
        if left_at.is_none()
            && ada
                .of_type("participant_left")
                .iter()
                .any(|v| v["participant"] == bob_on_a.as_str())
        {
            left_at = Some(killed.elapsed());
        }
        if new_slot.is_none() {
            let new_id = ids_of(&ada, "bob").into_iter().find(|id| *id != bob_on_a);
            if let Some(track) = new_id.and_then(|id| ada.track_of(&id, "video")) {
                new_slot = Some(ada.subscribe(&track, None).await);
            }
        }
        let seen = new_slot
            .as_ref()
            .is_some_and(|m| !video_on(&ada, m, 3).is_empty());
        let heard = !audio_from(&ada, 3).is_empty();
        if (left_at.is_some() && seen && heard) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = |v: Vec<Instant>| v.into_iter().min().map(|t| t.duration_since(killed));
    let heard_at = first(audio_from(&ada, 3));
    let seen_at = new_slot.as_ref().and_then(|m| first(video_on(&ada, m, 3)));
    let show = |d: Option<Duration>| d.map_or("never".to_owned(), secs);
    eprintln!(
        "after the kill: ada saw bob leave at {}, heard re-homed bob at {}, saw his video at {}",
        show(left_at),
        show(heard_at),
        show(seen_at)
    );

    let swept = sweep.join().expect("directory poller");
    eprintln!(
        "directory: b's entries gone {}",
        match &swept {
            Ok(t) => format!("{} after the kill", secs(*t)),
            Err(left) => format!("NOT after {}: {left:?}", secs(DIRECTORY_WITHIN + 2 * SEC)),
        }
    );
    // Re-homed bob also reaches the third node (cleo on c), wherever he re-homed.
    let cleo_heard_at = first(audio_from(&cleo, 3));
    eprintln!(
        "after the kill: cleo heard re-homed bob at {}",
        show(cleo_heard_at)
    );

    // cleo (node c) kept getting ada's video (node a) across the kill, the link timeout and
    // the directory sweep.
    let settle = killed + GAP_WINDOW;
    if Instant::now() < settle {
        tokio::time::sleep(settle - Instant::now()).await;
    }
    let mut times: Vec<Instant> = video_on(&cleo, &cleo_slot, 1)
        .into_iter()
        .filter(|t| *t + 2 * SEC >= killed)
        .collect();
    times.sort();
    times.push(Instant::now());
    let gap = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or(Duration::MAX);
    eprintln!(
        "cleo: {} video packets from ada from 2 s before the kill to {} after it; longest gap {} ms",
        times.len() - 1,
        secs(killed.elapsed()),
        gap.as_millis()
    );

    assert!(
        gap <= MAX_GAP,
        "cleo's video from ada stopped for {} ms across the kill of b",
        gap.as_millis()
    );
    assert!(
        left_at.is_some_and(|t| t <= LEFT_WITHIN),
        "ada did not see bob (b) leave within {LEFT_WITHIN:?}: {}",
        show(left_at)
    );
    assert!(
        heard_at.is_some_and(|t| t <= AUDIO_WITHIN),
        "ada did not hear re-homed bob within {AUDIO_WITHIN:?} of the kill: {}",
        show(heard_at)
    );
    assert!(
        cleo_heard_at.is_some_and(|t| t <= AUDIO_WITHIN),
        "cleo (c) did not hear re-homed bob within {AUDIO_WITHIN:?} of the kill: {}",
        show(cleo_heard_at)
    );
    assert!(
        seen_at.is_some_and(|t| t <= VIDEO_WITHIN),
        "ada did not get re-homed bob's video within {VIDEO_WITHIN:?} of the kill: {}",
        show(seen_at)
    );
    match swept {
        Ok(t) => assert!(
            t <= DIRECTORY_WITHIN,
            "b's directory entries took {}",
            secs(t)
        ),
        Err(left) => panic!("b's directory entries still there: {left:?}"),
    }

    // b comes back with the same name and ports and serves the room again.
    let restarted = Instant::now();
    nodes[1].start().await;
    let dora = Client::join(b, ROOM, "dora").await;
    let ada_on_b = wait_id(&dora, "ada").await;
    let ada_video_on_b = dora.wait_track(&ada_on_b, "video").await;
    let dora_slot = dora.subscribe(&ada_video_on_b, None).await;
    dora.wait_connected().await;
    let ok = eventually(5 * SEC, || video_on(&dora, &dora_slot, 1).len() >= 30).await;
    assert!(
        ok,
        "dora on restarted b got {} video packets from ada",
        video_on(&dora, &dora_slot, 1).len()
    );
    // ...and the other nodes see b's participants again.
    wait_id(&ada, "dora").await;
    wait_id(&cleo, "dora").await;
    let nodes_seen = dora.of_type("joined")[0]["nodes"].clone();
    eprintln!(
        "restarted b: dora gets ada's video {} after the restart; joined.nodes {nodes_seen}",
        secs(restarted.elapsed())
    );
    assert!(
        redis_cli(
            redis_port,
            &["SMEMBERS", &format!("plenary:room:{ROOM}:nodes")]
        )
        .iter()
        .any(|n| n == "b"),
        "restarted b is not listed for the room"
    );
    for cl in [dora, bob, cleo, ada] {
        cl.leave().await;
    }
}
