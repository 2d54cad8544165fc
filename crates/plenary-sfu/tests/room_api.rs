//! The room API end to end on 127.0.0.1: synthetic str0m clients (WebSocket + publish and
//! subscribe peer connections) against an in-process SFU. Covers joining and forwarding,
//! simulcast layer switching, NACK/RTX, last-N, active speaker, errors and tokens, and the
//! WHEP programme feed.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::Value;
use str0m::media::MediaKind;

/// Media tests run one at a time: each drives an SFU and several clients with real-time
/// pacing, and the machine has two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_participants_exchange_video_and_audio() {
    exchange(|_| {}, false).await;
}

/// The same across two workers: with `room_spill` 1 the second participant lands on the other
/// worker, and everything (events, tracks, media, speaker audio) crosses the pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_participants_on_two_workers_exchange_through_the_pipe() {
    exchange(
        |c| {
            c.workers = 2;
            c.room_spill = 1;
        },
        true,
    )
    .await;
}

async fn exchange(config: impl FnOnce(&mut plenary_sfu::SfuConfig), two_workers: bool) {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(config).await;
    let http = sfu.http_addr();

    let mut a = Client::join(http, "r1", "ada").await;
    let mut b = Client::join(http, "r1", "bob").await;
    let worker = |id: &str| id.trim_start_matches('p').parse::<u64>().unwrap() & 0xff;
    assert_eq!(
        worker(&a.id) != worker(&b.id),
        two_workers,
        "{} and {}",
        a.id,
        b.id
    );
    // A sees B arrive; B's `joined` lists A.
    a.wait("participant_joined", 5 * SEC, |v| {
        v["type"] == "participant_joined" && v["participant"] == b.id.as_str() && v["name"] == "bob"
    })
    .await;
    let joined = &b.of_type("joined")[0];
    assert!(
        joined["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == a.id.as_str() && p["name"] == "ada"),
        "{joined}"
    );
    assert_eq!(joined["audio_slots"], 3);

    a.publish(PublishPlan::av(1, 300_000)).await;
    b.publish(PublishPlan::av(2, 300_000)).await;
    let a_video = b.wait_track(&a.id, "video").await;
    let b_video = a.wait_track(&b.id, "video").await;
    assert!(a.track_of(&b.id, "audio").is_some() && b.track_of(&a.id, "audio").is_some());
    for (c, other) in [(&a, &b), (&b, &a)] {
        let published = c.of_type("track_published");
        assert!(
            published
                .iter()
                .any(|v| v["participant"] == other.id.as_str()
                    && v["track"]["kind"] == "video"
                    && v["track"]["source"] == "camera"
                    && v["track"]["layers"] == 1),
            "{published:?}"
        );
    }

    let a_slot = a.subscribe(&b_video, None).await;
    let b_slot = b.subscribe(&a_video, None).await;
    a.wait_connected().await;
    b.wait_connected().await;

    // Silent microphones (level -127) are not given audio slots.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for c in [&a, &b] {
        let named: Vec<_> = c
            .of_type("audio_slot")
            .into_iter()
            .filter(|v| !v["participant"].is_null())
            .collect();
        assert!(
            named.is_empty(),
            "{}: slot given to a silent mic: {named:?}",
            c.id
        );
        assert!(
            c.sub
                .shared
                .records()
                .iter()
                .all(|r| r.kind == MediaKind::Video),
            "silent audio forwarded"
        );
    }

    // Both talk, so each is heard by the other through an audio slot.
    a.set_talking(true);
    b.set_talking(true);
    let audio_from = |c: &Client, tag: u8| {
        let mids = c.audio_slot_mids();
        c.sub
            .shared
            .records()
            .into_iter()
            .filter(|r| r.tag == tag && mids.contains(&r.mid))
            .collect::<Vec<_>>()
    };
    let enough = eventually(8 * SEC, || {
        a.sub.shared.count_on(&a_slot) >= 100
            && b.sub.shared.count_on(&b_slot) >= 100
            && audio_from(&a, 2).len() >= 50
            && audio_from(&b, 1).len() >= 50
    })
    .await;
    assert!(
        enough,
        "a got video {} audio {}, b got video {} audio {}",
        a.sub.shared.count_on(&a_slot),
        audio_from(&a, 2).len(),
        b.sub.shared.count_on(&b_slot),
        audio_from(&b, 1).len(),
    );
    for (c, other, video_mid, from) in [(&a, &b, &a_slot, 2u8), (&b, &a, &b_slot, 1u8)] {
        let recs = c.sub.shared.records();
        let video: Vec<&Rec> = recs.iter().filter(|r| &r.mid == video_mid).collect();
        assert!(
            video.iter().all(|r| r.tag == from),
            "video from {from} only"
        );
        let video: Vec<Rec> = video.into_iter().cloned().collect();
        let first = &by_seq(&video)[0];
        assert!(
            first.key,
            "{}: the stream starts with a keyframe: {:?}",
            c.id,
            &video[..4]
        );
        assert!(
            missing_seqs(&video).is_empty(),
            "{:?}",
            missing_seqs(&video)
        );
        // All audio heard comes from the other participant, through the slot the server
        // named for them, with the level passed on.
        let audio: Vec<&Rec> = recs.iter().filter(|r| r.kind == MediaKind::Audio).collect();
        assert!(
            audio.iter().all(|r| r.tag == from),
            "{}: heard itself",
            c.id
        );
        assert!(
            audio.iter().all(|r| r.level == Some(TALKING)),
            "level forwarded"
        );
        let mid = &audio.last().unwrap().mid;
        let named = c
            .of_type("audio_slot")
            .into_iter()
            .rfind(|v| v["mid"] == mid.as_str())
            .expect("audio_slot event for the mid audio arrives on");
        assert_eq!(named["participant"], other.id.as_str(), "{named}");
    }

    let b_id = b.id.clone();
    b.leave().await;
    a.wait("participant_left", 5 * SEC, |v| {
        v["type"] == "participant_left" && v["participant"] == b_id.as_str()
    })
    .await;
    assert!(a
        .of_type("track_unpublished")
        .iter()
        .any(|v| v["track"]["id"] == b_video.as_str()));
    a.leave().await;
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layer_switch_is_seamless() {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(|_| {}).await;
    let http = sfu.http_addr();
    let mut p = Client::join(http, "sim", "pub").await;
    let s = Client::join(http, "sim", "sub").await;
    let layers = [("q", 100_000), ("h", 400_000), ("f", 1_200_000)];
    p.publish(PublishPlan::simulcast(7, &layers)).await;
    let track = s.wait_track(&p.id, "video").await;
    let info = s
        .of_type("track_published")
        .into_iter()
        .find(|v| v["track"]["id"] == track.as_str())
        .unwrap();
    assert_eq!(info["track"]["layers"], 3, "{info}");
    let mid = s.subscribe(&track, Some(0)).await;
    s.wait_connected().await;
    p.wait_connected().await;

    // max_layer 0: only the low layer, for a good while (the estimate would allow more).
    let ok = eventually(5 * SEC, || s.sub.shared.count_on(&mid) >= 30).await;
    assert!(ok, "no video on the low layer");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = s.sub.shared.records_on(&mid);
    let seen: std::collections::BTreeSet<u8> = before.iter().map(|r| r.layer).collect();
    assert_eq!(seen, [0].into(), "max_layer 0 gets layer 0 only");
    let kf_before = [1, 2].map(|l| p.publisher().keyframe_requests(l));

    // Raise the preference: the server moves up as far as its estimate of the link allows.
    let t_set = std::time::Instant::now();
    s.send(serde_json::json!({"type": "set_layer", "track": track, "max_layer": 2}));
    let switched = eventually(10 * SEC, || {
        s.sub.shared.records_on(&mid).iter().any(|r| r.layer > 0)
    })
    .await;
    assert!(switched, "no layer above 0 within 10 s of set_layer");
    let t_switch = t_set.elapsed();
    // Let it settle (a further step up to the top layer, if the estimate allows it).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let recs = s.sub.shared.records_on(&mid);
    let layer_runs = runs(&recs, |r| r.layer);
    eprintln!(
        "simulcast: first switch {t_switch:?} after set_layer; runs (layer, first seq, last seq, \
         packets, starts with keyframe): {layer_runs:?}"
    );
    assert!(recs.iter().all(|r| r.tag == 7));
    // The stream starts, and every switch lands, on a keyframe of the new layer, with the
    // next sequence number. The first switch goes up.
    assert!(layer_runs[0].4, "{layer_runs:?}");
    assert!(
        layer_runs.len() >= 2 && layer_runs[1].0 > 0,
        "{layer_runs:?}"
    );
    for w in layer_runs.windows(2) {
        assert!(
            w[1].4,
            "switch to layer {} not at a keyframe: {layer_runs:?}",
            w[1].0
        );
        assert_eq!(w[1].1, w[0].2 + 1, "seq gap at the switch: {layer_runs:?}");
    }
    // A higher layer is received for a while (the estimate could also fall on a loaded
    // machine and bring it down again, which is allowed).
    assert!(
        layer_runs.iter().any(|r| r.0 >= 1 && r.3 >= 30),
        "no sustained higher layer: {layer_runs:?}"
    );
    // One continuous stream: no missing sequence numbers, timestamps never go back.
    let missing = missing_seqs(&recs);
    assert!(missing.is_empty(), "missing seqs {missing:?}");
    let back = ts_regressions(&recs);
    assert!(back.is_empty(), "timestamps went back: {back:?}");
    // The switch asked the publisher for a keyframe on the new layer.
    for l in layer_runs.iter().skip(1).map(|r| r.0 as usize) {
        let now = p.publisher().keyframe_requests(l);
        assert!(
            now > kf_before[l - 1],
            "no keyframe request for layer {l} ({} before, {now} after)",
            kf_before[l - 1]
        );
    }
    s.leave().await;
    p.leave().await;
    sfu.shutdown().await;
}

/// Dynacast must not pause a layer the SFU has not seen yet. In a 30-minute soak every
/// listener sat on the presenter's middle layer: its first packets came before the top
/// layer's, the first listener was bound to it, and asking the publisher for it alone paused
/// the top layer before it ever arrived, so nobody could choose it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preferred_layer_that_has_not_arrived_yet_is_not_paused() {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(|_| {}).await;
    let http = sfu.http_addr();
    let mut p = Client::join(http, "late", "pub").await;
    let s = Client::join(http, "late", "sub").await;
    let layers = [("q", 100_000), ("h", 400_000), ("f", 1_200_000)];
    // Only the middle layer's encoder is running when the listener arrives.
    p.publish_paused(PublishPlan::simulcast(9, &layers), &[0, 2])
        .await;
    let track = s.wait_track(&p.id, "video").await;
    let mid = s.subscribe(&track, Some(2)).await;
    s.wait_connected().await;
    let ok = eventually(5 * SEC, || s.sub.shared.count_on(&mid) >= 30).await;
    assert!(ok, "no video on the middle layer");
    assert!(
        s.sub.shared.records_on(&mid).iter().all(|r| r.layer == 1),
        "only the middle layer was sent"
    );

    // From here the publisher sends exactly what the server asks for, as a browser does.
    let wanted = || {
        p.of_type("layers_wanted")
            .into_iter()
            .rfind(|v| v["track"] == track.as_str())
    };
    let mut top = false;
    for _ in 0..100 {
        if let Some(w) = wanted() {
            let on: Vec<u64> = w["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect();
            for l in 0..3 {
                p.publisher().layer_paused[l].store(!on.contains(&(l as u64)), Ordering::SeqCst);
            }
        }
        if s.sub.shared.records_on(&mid).iter().any(|r| r.layer == 2) {
            top = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked: Vec<Value> = p
        .of_type("layers_wanted")
        .into_iter()
        .filter(|v| v["track"] == track.as_str())
        .collect();
    assert!(
        top,
        "the top layer never reached the listener in 10 s; the server asked for {asked:?}"
    );
    s.leave().await;
    p.leave().await;
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_are_retransmitted() {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(|_| {}).await;
    let http = sfu.http_addr();
    let mut p = Client::join(http, "nack", "pub").await;
    let s = Client::join(http, "nack", "sub").await;
    p.publish(PublishPlan::av(3, 300_000)).await;
    let track = s.wait_track(&p.id, "video").await;
    let mid = s.subscribe(&track, None).await;
    s.wait_connected().await;
    assert!(
        eventually(5 * SEC, || s.sub.shared.count_on(&mid) >= 30).await,
        "video flows"
    );
    // Drop three first transmissions (two adjacent, one alone) before str0m sees them.
    *s.sub.shared.drop.lock().unwrap() = Some(DropPlan::new(&mid, &[10, 11, 30]));
    let dropped = || {
        s.sub
            .shared
            .drop
            .lock()
            .unwrap()
            .as_ref()
            .map(|d| d.dropped.clone())
            .unwrap_or_default()
    };
    assert!(
        eventually(5 * SEC, || dropped().len() == 3).await,
        "packets dropped"
    );
    let lost = dropped();
    let arrived = |seq16: u16| {
        s.sub
            .shared
            .records_on(&mid)
            .iter()
            .any(|r| r.seq as u16 == seq16)
    };
    let repaired = eventually(5 * SEC, || lost.iter().all(|&q| arrived(q))).await;
    let missing: Vec<u16> = lost.iter().copied().filter(|&q| !arrived(q)).collect();
    assert!(repaired, "dropped {lost:?}, never repaired: {missing:?}");
    // They came back because the subscriber asked (NACK), not by chance.
    assert!(
        eventually(3 * SEC, || s.sub.shared.nacks_sent() >= 1).await,
        "subscriber sent no NACK"
    );
    let recs = s.sub.shared.records_on(&mid);
    assert!(missing_seqs(&recs).is_empty());
    s.leave().await;
    p.leave().await;
    sfu.shutdown().await;
}

/// Tracks currently paused for a subscriber, from its `paused` / `resumed` events.
fn paused_now(c: &Client) -> std::collections::BTreeSet<String> {
    let mut set = std::collections::BTreeSet::new();
    for v in c.log() {
        let t = v["track"].as_str().unwrap_or_default().to_owned();
        if v["type"] == "paused" {
            set.insert(t);
        } else if v["type"] == "resumed" {
            set.remove(&t);
        }
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_n_pauses_cameras_and_resumes_the_speaker() {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(|c| c.last_n = 2).await;
    let http = sfu.http_addr();
    let mut pubs = Vec::new();
    for i in 1..=4u8 {
        let mut c = Client::join(http, "lastn", &format!("cam{i}")).await;
        c.publish(PublishPlan::av(i, 120_000)).await;
        pubs.push(c);
    }
    let s = Client::join(http, "lastn", "viewer").await;
    let mut tracks = Vec::new();
    for p in &pubs {
        tracks.push(s.wait_track(&p.id, "video").await);
    }
    // Four subscriptions in a row: the later ones wait for the first offer's answer.
    for t in &tracks {
        s.send(serde_json::json!({"type": "subscribe", "tracks": [{"track": t}]}));
    }
    assert!(
        eventually(5 * SEC, || tracks.iter().all(|t| s.slot_mid(t).is_some())).await,
        "all four subscriptions offered: {:?}",
        s.of_type("offer").last().map(|o| o["slots"].clone())
    );
    let mids: Vec<String> = tracks.iter().map(|t| s.slot_mid(t).unwrap()).collect();
    s.wait_connected().await;
    for p in &pubs {
        p.wait_connected().await;
    }
    assert!(
        eventually(5 * SEC, || paused_now(&s).len() == 2).await,
        "two of four cameras paused: {:?}",
        s.log()
            .iter()
            .filter(|v| v["type"] == "paused" || v["type"] == "resumed")
            .collect::<Vec<_>>()
    );
    let paused = paused_now(&s);
    // Over a while, video comes from the two forwarded cameras only.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let video_tags = |since: std::time::Instant| {
        let recs = s.sub.shared.records();
        mids.iter()
            .zip(&tracks)
            .filter(|(m, _)| recs.iter().any(|r| &r.mid == *m && r.at >= since))
            .map(|(_, t)| t.clone())
            .collect::<std::collections::BTreeSet<String>>()
    };
    let flowing = video_tags(t0);
    assert_eq!(
        flowing.len(),
        2,
        "video from {flowing:?}, paused {paused:?}"
    );
    assert!(flowing.is_disjoint(&paused), "paused camera sent video");
    assert_eq!(
        s.of_type("paused").len(),
        2,
        "no flapping: {:?}",
        s.of_type("paused")
    );

    // A paused camera's owner starts talking: it becomes the speaker and is resumed.
    let quiet = paused.iter().next().unwrap().clone();
    let k = tracks.iter().position(|t| *t == quiet).unwrap();
    let talker = &pubs[k];
    let t_talk = std::time::Instant::now();
    talker.set_talking(true);
    s.wait("active_speaker", 4 * SEC, |v| {
        v["type"] == "active_speaker" && v["participant"] == talker.id.as_str()
    })
    .await;
    s.wait("resumed", 4 * SEC, |v| {
        v["type"] == "resumed" && v["track"] == quiet.as_str()
    })
    .await;
    let resumed_after = t_talk.elapsed();
    assert!(
        resumed_after < Duration::from_millis(2500),
        "{resumed_after:?}"
    );
    assert!(
        eventually(4 * SEC, || s
            .sub
            .shared
            .records_on(&mids[k])
            .iter()
            .any(|r| r.at >= t_talk && r.tag == k as u8 + 1))
        .await,
        "the speaker's camera arrives after resume"
    );
    // Still two cameras at most: another one made room.
    assert!(
        eventually(2 * SEC, || paused_now(&s).len() == 2).await,
        "{:?}",
        paused_now(&s)
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t1 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let flowing = video_tags(t1);
    assert!(
        flowing.contains(&quiet) && flowing.len() == 2,
        "{flowing:?}"
    );
    eprintln!("last-N: speaker's camera resumed {resumed_after:?} after it started talking");

    s.leave().await;
    for p in pubs {
        p.leave().await;
    }
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_speaker_follows_who_talks() {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(|_| {}).await;
    let http = sfu.http_addr();
    let mut a = Client::join(http, "talk", "ada").await;
    let mut b = Client::join(http, "talk", "bob").await;
    let c = Client::join(http, "talk", "cy").await;
    a.publish(PublishPlan::audio_only(1)).await;
    b.publish(PublishPlan::audio_only(2)).await;
    a.wait_connected().await;
    b.wait_connected().await;
    let speakers = || {
        c.of_type("active_speaker")
            .iter()
            .map(|v| v["participant"].as_str().unwrap_or("null").to_owned())
            .collect::<Vec<_>>()
    };
    // Both silent: nobody speaks.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(speakers().is_empty(), "{:?}", speakers());

    a.set_talking(true);
    c.wait("active_speaker a", 4 * SEC, |v| {
        v["type"] == "active_speaker" && v["participant"] == a.id.as_str()
    })
    .await;
    // A alone keeps the floor.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(speakers(), vec![a.id.clone()]);

    a.set_talking(false);
    b.set_talking(true);
    c.wait("active_speaker b", 5 * SEC, |v| {
        v["type"] == "active_speaker" && v["participant"] == b.id.as_str()
    })
    .await;
    assert_eq!(speakers(), vec![a.id.clone(), b.id.clone()]);
    // Everyone in the room is told, in the same order.
    for x in [&a, &b] {
        let seen: Vec<_> = x
            .of_type("active_speaker")
            .iter()
            .map(|v| v["participant"].as_str().unwrap_or("null").to_owned())
            .collect();
        assert_eq!(seen, vec![a.id.clone(), b.id.clone()], "{}", x.id);
    }
    c.leave().await;
    a.leave().await;
    b.leave().await;
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_and_room_tokens() {
    let sfu = start_sfu(|_| {}).await;
    let http = sfu.http_addr();

    // Before join: anything else is refused, and the socket stays usable.
    let ws = ws_connect(http, "err", None).await.expect("ws");
    let mut early =
        Client::join_on_after(ws, "early", Some(r#"{"type":"subscribe","tracks":[]}"#)).await;
    assert!(early.of_type("error")[0]["message"]
        .as_str()
        .unwrap()
        .contains("join"));

    let c = Client::join(http, "err", "ada").await;
    let errors = |c: &Client| c.of_type("error");
    c.send_raw("{not json");
    c.wait("error for bad JSON", 3 * SEC, |v| v["type"] == "error")
        .await;
    c.send_raw(r#"{"type":"no_such_message"}"#);
    assert!(eventually(3 * SEC, || errors(&c).len() == 2).await);
    c.send(serde_json::json!({"type": "subscribe", "tracks": [{"track": "t999999"}]}));
    assert!(eventually(3 * SEC, || errors(&c).len() == 3).await);
    assert!(
        errors(&c)[2]["message"]
            .as_str()
            .unwrap()
            .contains("t999999"),
        "{:?}",
        errors(&c)
    );
    c.send(serde_json::json!({"type": "subscribe", "tracks": [{"track": "bogus"}]}));
    assert!(eventually(3 * SEC, || errors(&c).len() == 4).await);
    assert!(
        errors(&c)[3]["message"]
            .as_str()
            .unwrap()
            .contains("unknown track"),
        "{:?}",
        errors(&c)
    );
    // Unusable SDP in an answer and in a publish offer.
    c.send(serde_json::json!({"type": "answer", "sdp": "v=0"}));
    c.send(serde_json::json!({"type": "publish", "sdp": "not sdp", "tracks": []}));
    assert!(eventually(3 * SEC, || errors(&c).len() == 6).await);
    for e in &errors(&c)[4..] {
        let m = e["message"].as_str().unwrap();
        assert!(m.contains("unparsable SDP"), "{m}");
        // Parser internals (a memory address) stay on the server.
        assert!(!m.contains("PointerOffset") && !m.contains("0x"), "{m}");
    }
    // Still open and still told about the room.
    assert!(c.ws_open());
    let d = Client::join(http, "err", "bob").await;
    c.wait("participant_joined after errors", 3 * SEC, |v| {
        v["type"] == "participant_joined" && v["participant"] == d.id.as_str()
    })
    .await;
    early.sub.stop();
    d.leave().await;
    c.leave().await;
    sfu.shutdown().await;

    // A token-protected server.
    let secret = "a-long-test-secret-0123456789";
    let sfu = start_sfu(|c| c.room_token_secrets = vec![secret.to_owned()]).await;
    let http = sfu.http_addr();
    match ws_connect(http, "club", None).await {
        Err(WsRefused::Http(401)) => {}
        other => panic!("no token: {:?}", other.map(|_| "accepted")),
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let claims = |room: &str, name: Option<&str>| plenary_sfu::token::Claims {
        room: room.into(),
        exp,
        name: name.map(str::to_owned),
    };
    let wrong_room = plenary_sfu::token::issue(secret, &claims("other", None));
    match ws_connect(http, "club", Some(&format!("token={wrong_room}"))).await {
        Err(WsRefused::Http(401)) => {}
        other => panic!("wrong room: {:?}", other.map(|_| "accepted")),
    }
    let forged = plenary_sfu::token::issue("not-the-secret", &claims("club", None));
    match ws_connect(http, "club", Some(&format!("token={forged}"))).await {
        Err(WsRefused::Http(401)) => {}
        other => panic!("forged: {:?}", other.map(|_| "accepted")),
    }
    let good = plenary_sfu::token::issue(secret, &claims("club", Some("from-token")));
    let ws = ws_connect(http, "club", Some(&format!("token={good}")))
        .await
        .expect("a valid token opens the room");
    let first = Client::join_on(ws, "ignored").await;
    let other = plenary_sfu::token::issue(secret, &claims("club", None));
    let ws = ws_connect(http, "club", Some(&format!("token={other}")))
        .await
        .expect("a second valid token");
    let second = Client::join_on(ws, "second").await;
    let joined = &second.of_type("joined")[0];
    assert_eq!(
        joined["participants"][0]["name"], "from-token",
        "the token's name wins: {joined}"
    );
    second.leave().await;
    first.leave().await;
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_programme_feed_follows_the_speaker() {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(|_| {}).await;
    let http = sfu.http_addr();
    let mut a = Client::join(http, "prog", "ada").await;
    let mut b = Client::join(http, "prog", "bob").await;
    a.publish(PublishPlan::av(1, 250_000)).await;
    b.publish(PublishPlan::av(2, 250_000)).await;
    a.wait_connected().await;
    b.wait_connected().await;
    let (viewer, amid, vmid) = tokio::task::block_in_place(|| whep_viewer(http, "prog"));
    assert!(
        eventually(10 * SEC, || viewer
            .shared
            .connected
            .load(std::sync::atomic::Ordering::SeqCst))
        .await,
        "viewer connects"
    );
    let since_tag = |tag: u8, since: std::time::Instant, mid: &str| {
        viewer
            .shared
            .records_on(mid)
            .iter()
            .filter(|r| r.tag == tag && r.at >= since)
            .count()
    };
    // Before anyone speaks the feed shows some camera; then B speaks.
    let t_b = std::time::Instant::now();
    b.set_talking(true);
    assert!(
        eventually(6 * SEC, || since_tag(2, t_b, &vmid) >= 30).await,
        "feed shows bob: {:?}",
        runs(&viewer.shared.records_on(&vmid), |r| r.tag)
    );
    let t_a = std::time::Instant::now();
    b.set_talking(false);
    a.set_talking(true);
    assert!(
        eventually(6 * SEC, || since_tag(1, t_a, &vmid) >= 30).await,
        "feed switches to ada: {:?}",
        runs(&viewer.shared.records_on(&vmid), |r| r.tag)
    );
    let video = viewer.shared.records_on(&vmid);
    let tag_runs = runs(&video, |r| r.tag);
    eprintln!("programme feed runs (tag, first seq, last seq, packets, key): {tag_runs:?}");
    // The feed settles on ada after bob (two runs, or three if it showed ada first).
    let tags: Vec<u8> = tag_runs.iter().map(|r| r.0).collect();
    assert!(tags.ends_with(&[2, 1]), "{tags:?}");
    for w in tag_runs.windows(2) {
        assert!(w[1].4, "switch not at a keyframe: {tag_runs:?}");
        assert_eq!(w[1].1, w[0].2 + 1, "seq gap at the switch: {tag_runs:?}");
    }
    assert!(
        missing_seqs(&video).is_empty(),
        "{:?}",
        missing_seqs(&video)
    );
    assert!(
        ts_regressions(&video).is_empty(),
        "{:?}",
        ts_regressions(&video)
    );
    // The audio follows the talkers too.
    let audio = viewer.shared.records_on(&amid);
    assert!(
        since_tag(2, t_b, &amid) > 0 && since_tag(1, t_a, &amid) > 0,
        "viewer audio on {amid}: {} packets, runs {:?}; all mids {:?}",
        audio.len(),
        runs(&audio, |r| r.tag),
        viewer
            .shared
            .records()
            .iter()
            .map(|r| r.mid.clone())
            .collect::<std::collections::BTreeSet<_>>()
    );

    drop(viewer);
    a.leave().await;
    b.leave().await;
    sfu.shutdown().await;
}

/// A WebSocket that joins and only reads: counts what it is sent, by type.
async fn raw_joiner(
    http: std::net::SocketAddr,
    room: &str,
    name: String,
) -> tokio::task::JoinHandle<std::collections::HashMap<String, usize>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = ws_connect(http, room, None).await.expect("websocket opens");
    let join = serde_json::json!({"type": "join", "name": name}).to_string();
    ws.send(Message::text(join)).await.expect("join sent");
    tokio::spawn(async move {
        let mut seen = std::collections::HashMap::new();
        // Ends when the test drops the task or after 60 s, whatever a failing test does.
        let until = tokio::time::Instant::now() + 60 * SEC;
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
            let t = match m {
                Message::Text(t) => t,
                Message::Close(_) => break,
                _ => continue,
            };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
            *seen
                .entry(v["type"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        seen
    })
}

/// 80 people join at once and 40 leave: members hear of them in coalesced `participants`
/// deltas, at most one per 250 ms, and nobody gets the full list twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_reach_the_room_as_coalesced_deltas() {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(|c| c.workers = 1).await;
    let http = sfu.http_addr();
    let observer = Client::join(http, "big", "observer").await;
    let started = std::time::Instant::now();
    let mut joiners = Vec::new();
    for i in 0..80 {
        joiners.push(raw_joiner(http, "big", format!("j{i}")).await);
    }
    let all_in = eventually(10 * SEC, || {
        observer.of_type("participant_joined").len() >= 80
    })
    .await;
    let joins_took = started.elapsed();
    let deltas = observer.of_type("participants").len();
    assert!(
        all_in,
        "observer saw {} joins",
        observer.of_type("participant_joined").len()
    );
    // One delta per 250 ms at most (plus the first, sent at once).
    let allowed = (joins_took.as_millis() / 250) as usize + 2;
    println!("80 joins in {joins_took:?}: the observer got {deltas} participants messages (allowed {allowed})");
    assert!(deltas <= allowed, "{deltas} deltas in {joins_took:?}");
    assert!(
        deltas < 40,
        "joins are coalesced: {deltas} messages for 80 joins"
    );
    assert_eq!(
        observer.of_type("joined").len(),
        1,
        "the full list is sent once"
    );

    // Half of them leave (their sockets close).
    let before = observer.of_type("participants").len();
    let leaving: Vec<_> = joiners.drain(..40).collect();
    for j in &leaving {
        j.abort();
    }
    let t_leave = std::time::Instant::now();
    assert!(
        eventually(10 * SEC, || observer.of_type("participant_left").len()
            >= 40)
        .await,
        "observer saw {} leaves",
        observer.of_type("participant_left").len()
    );
    let leave_deltas = observer.of_type("participants").len() - before;
    let allowed = (t_leave.elapsed().as_millis() / 250) as usize + 2;
    assert!(
        leave_deltas <= allowed,
        "{leave_deltas} deltas for 40 leaves"
    );

    // What each remaining joiner was sent: one `joined`, and deltas, never a list per join.
    tokio::time::sleep(SEC).await;
    let elapsed = started.elapsed();
    sfu.shutdown().await;
    for j in joiners {
        let seen = j.await.expect("reader task");
        assert_eq!(seen.get("joined"), Some(&1), "{seen:?}");
        let deltas = seen.get("participants").copied().unwrap_or(0);
        assert!(
            deltas <= (elapsed.as_millis() / 250) as usize + 2,
            "a joiner got {deltas} deltas in {elapsed:?}: {seen:?}"
        );
    }
}

/// WHEP `?screen=1`: the second video m-line carries the screen share published by WHIP
/// `?source=screen`, the first only cameras; when the share ends, the screen m-line goes quiet
/// and the camera goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_screen_slot_carries_the_screen_share() {
    let _serial = SERIAL.lock().await;
    let sfu = start_sfu(|_| {}).await;
    let http = sfu.http_addr();
    let (camera, screen, viewer, screen_loc, amid, vmids) =
        tokio::task::spawn_blocking(move || {
            let (camera, _) = whip_publisher(http, "/whip/pres", PublishPlan::av(1, 300_000));
            camera
                .shared
                .talking
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let screen_plan = PublishPlan {
                tag: 2,
                audio: false,
                video: vec![LayerPlan {
                    rid: None,
                    bps: 300_000,
                }],
            };
            let (screen, loc) = whip_publisher(http, "/whip/pres?source=screen", screen_plan);
            let (viewer, amid, vmids, _) = whep_viewer_at(http, "/whep/pres?screen=1", 2);
            (camera, screen, viewer, loc, amid, vmids)
        })
        .await
        .unwrap();
    let (programme, screen_mid) = (vmids[0].clone(), vmids[1].clone());
    let tags_on = |mid: &str| -> Vec<u8> {
        let mut t: Vec<u8> = viewer
            .shared
            .records_on(mid)
            .iter()
            .map(|r| r.tag)
            .collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    assert!(
        eventually(10 * SEC, || viewer.shared.count_on(&screen_mid) > 60
            && viewer.shared.count_on(&programme) > 60)
        .await,
        "both video m-lines carry media: programme {} screen {}",
        viewer.shared.count_on(&programme),
        viewer.shared.count_on(&screen_mid)
    );
    assert_eq!(
        tags_on(&programme),
        vec![1],
        "the programme carries the camera only"
    );
    assert_eq!(
        tags_on(&screen_mid),
        vec![2],
        "the screen m-line carries the screen only"
    );
    assert!(
        viewer.shared.count_on(&amid) > 0,
        "audio reaches the viewer"
    );

    // The share ends: the screen m-line goes quiet, the camera goes on.
    let status = tokio::task::spawn_blocking(move || http_status(http, "DELETE", &screen_loc))
        .await
        .unwrap();
    assert_eq!(status, 204);
    drop(screen);
    tokio::time::sleep(SEC / 2).await;
    let (screen_then, camera_then) = (
        viewer.shared.count_on(&screen_mid),
        viewer.shared.count_on(&programme),
    );
    tokio::time::sleep(SEC).await;
    assert_eq!(
        viewer.shared.count_on(&screen_mid),
        screen_then,
        "screen m-line quiet"
    );
    assert!(
        viewer.shared.count_on(&programme) > camera_then + 20,
        "camera goes on"
    );
    drop((camera, viewer));
    sfu.shutdown().await;
}

/// A socket that never joins is closed 10 s after its upgrade, even if it keeps talking: the
/// join deadline does not restart with each message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_talks_but_never_joins_is_closed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let sfu = start_sfu(|_| {}).await;
    let mut ws = ws_connect(sfu.http_addr(), "chatty", None)
        .await
        .expect("websocket opens");
    let t0 = tokio::time::Instant::now();
    let mut closed_at = None;
    let mut errors = 0;
    // Talks every 500 ms for up to 15 s; stops at the close.
    while t0.elapsed() < 15 * SEC && closed_at.is_none() {
        let msg = r#"{"type":"subscribe","tracks":[]}"#;
        if ws.send(Message::text(msg)).await.is_err() {
            closed_at = Some(t0.elapsed());
            break;
        }
        let until = tokio::time::Instant::now() + SEC / 2;
        while let Ok(next) = tokio::time::timeout_at(until, ws.next()).await {
            match next {
                Some(Ok(Message::Text(t))) if t.as_str().contains("error") => errors += 1,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    closed_at = Some(t0.elapsed());
                    break;
                }
                _ => {}
            }
        }
    }
    let closed_at = closed_at.expect("the server never closed a socket that never joined");
    assert!(
        (9 * SEC..12 * SEC).contains(&closed_at),
        "closed after {closed_at:?}, expected about 10 s"
    );
    assert!(
        errors >= 15,
        "each message before join was answered: {errors}"
    );
    sfu.shutdown().await;
}

/// A joined socket hears `alive` every second even when nothing happens in the room: the
/// sign of life that lets a client tell a vanished node from a quiet room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_socket_hears_alive_every_second() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let sfu = start_sfu(|_| {}).await;
    let mut ws = ws_connect(sfu.http_addr(), "quiet", None)
        .await
        .expect("websocket opens");
    let join = serde_json::json!({"type": "join", "name": "alone"}).to_string();
    ws.send(Message::text(join)).await.expect("join sent");
    let t0 = tokio::time::Instant::now();
    let (mut alive, mut joined) = (0, false);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(t0 + SEC * 7 / 2, ws.next()).await {
        if let Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
            alive += usize::from(v["type"] == "alive");
            joined |= v["type"] == "joined";
        }
    }
    assert!(joined, "never joined");
    assert!(
        (3..=4).contains(&alive),
        "{alive} `alive` in 3.5 s of a quiet room, expected one a second"
    );
    sfu.shutdown().await;
}
