//! Cascade end to end on 127.0.0.1: two (or three) in-process SFU nodes with QUIC links and a
//! real redis-server as the directory; synthetic room-API clients on different nodes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::Redis;
use common::*;
use plenary_sfu::{CascadeConfig, RunningSfu};
use str0m::media::MediaKind;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SEC: Duration = Duration::from_secs(1);
const SECRET: &[u8] = b"cluster-secret-for-tests-0123456789";

async fn node(redis: &Redis, name: &str, secret: &[u8]) -> RunningSfu {
    let url = redis.url();
    start_sfu(|c| {
        c.workers = 1;
        c.cascade = Some(CascadeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            directory: url,
            secret: secret.to_vec(),
            node: name.to_owned(),
            max_load: 0,
            public_url: None,
        });
    })
    .await
}

/// The id a client's node gave the participant called `name` (ids differ between nodes).
fn id_of(c: &Client, name: &str) -> Option<String> {
    let joined = c.of_type("joined");
    let listed = joined.first().and_then(|j| {
        j["participants"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["id"].as_str().map(str::to_owned))
    });
    listed.or_else(|| {
        c.of_type("participant_joined")
            .into_iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["participant"].as_str().map(str::to_owned))
    })
}

async fn wait_id(c: &Client, name: &str) -> String {
    let mut found = None;
    eventually(5 * SEC, || {
        found = id_of(c, name);
        found.is_some()
    })
    .await;
    found.unwrap_or_else(|| panic!("{} never saw {name}: {:?}", c.id, c.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_on_two_nodes_see_and_hear_each_other() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = Redis::start() else { return };
    let node_a = node(&redis, "node-a", SECRET).await;
    let node_b = node(&redis, "node-b", SECRET).await;

    let mut ada = Client::join(node_a.http_addr(), "assembly", "ada").await;
    let mut bob = Client::join(node_b.http_addr(), "assembly", "bob").await;
    // `joined` on B lists ada (from A) and the room's two nodes.
    let ada_on_b = wait_id(&bob, "ada").await;
    let bob_on_a = wait_id(&ada, "bob").await;
    let joined = &bob.of_type("joined")[0];
    assert_eq!(
        joined["nodes"].as_array().map(Vec::len),
        Some(2),
        "{joined}"
    );

    ada.publish(PublishPlan::av(1, 300_000)).await;
    bob.publish(PublishPlan::av(2, 300_000)).await;
    let ada_video = bob.wait_track(&ada_on_b, "video").await;
    let bob_video = ada.wait_track(&bob_on_a, "video").await;
    let bob_slot = bob.subscribe(&ada_video, None).await;
    let ada_slot = ada.subscribe(&bob_video, None).await;
    ada.wait_connected().await;
    bob.wait_connected().await;
    ada.set_talking(true);
    bob.set_talking(true);
    let audio_from = |c: &Client, tag: u8| {
        let mids = c.audio_slot_mids();
        c.sub
            .shared
            .records()
            .into_iter()
            .filter(|r| r.tag == tag && r.kind == MediaKind::Audio && mids.contains(&r.mid))
            .count()
    };
    let enough = eventually(10 * SEC, || {
        ada.sub.shared.count_on(&ada_slot) >= 100
            && bob.sub.shared.count_on(&bob_slot) >= 100
            && audio_from(&ada, 2) >= 50
            && audio_from(&bob, 1) >= 50
    })
    .await;
    assert!(
        enough,
        "across nodes: ada got video {} audio {}, bob got video {} audio {}",
        ada.sub.shared.count_on(&ada_slot),
        audio_from(&ada, 2),
        bob.sub.shared.count_on(&bob_slot),
        audio_from(&bob, 1),
    );
    for (c, video_mid, from) in [(&ada, &ada_slot, 2u8), (&bob, &bob_slot, 1u8)] {
        let video: Vec<Rec> = c
            .sub
            .shared
            .records()
            .into_iter()
            .filter(|r| &r.mid == video_mid)
            .collect();
        assert!(
            video.iter().all(|r| r.tag == from),
            "video from {from} only"
        );
        assert!(by_seq(&video)[0].key, "{}: starts at a keyframe", c.id);
    }
    // The speaker is decided room-wide: with only bob talking, both nodes name him.
    ada.set_talking(false);
    ada.wait("active_speaker", 5 * SEC, |v| {
        v["type"] == "active_speaker" && v["participant"] == bob_on_a.as_str()
    })
    .await;
    bob.wait("active_speaker", 5 * SEC, |v| {
        v["type"] == "active_speaker" && v["participant"] == bob.id.as_str()
    })
    .await;

    // Bob leaves node B: ada on node A is told, and his tracks go.
    bob.leave().await;
    ada.wait("participant_left", 5 * SEC, |v| {
        v["type"] == "participant_left" && v["participant"] == bob_on_a.as_str()
    })
    .await;
    assert!(ada
        .of_type("track_unpublished")
        .iter()
        .any(|v| v["track"]["id"] == bob_video.as_str()));
    ada.leave().await;
    node_b.shutdown().await;
    node_a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = Redis::start() else { return };
    let node_a = node(&redis, "node-a", SECRET).await;
    let intruder = node(&redis, "intruder", b"not-the-cluster-secret-at-all").await;
    let ada = Client::join(node_a.http_addr(), "r", "ada").await;
    let eve = Client::join(intruder.http_addr(), "r", "eve").await;
    // Neither side learns of the other: the link never authenticates.
    tokio::time::sleep(3 * SEC).await;
    assert!(id_of(&eve, "ada").is_none(), "{:?}", eve.log());
    assert!(id_of(&ada, "eve").is_none(), "{:?}", ada.log());
    ada.leave().await;
    eve.leave().await;
    intruder.shutdown().await;
    node_a.shutdown().await;
}
