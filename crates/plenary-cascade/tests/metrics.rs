//! What the links record, read back through a debugging recorder. One test: the recorder is
//! process-global.

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use plenary_cascade::link::LinkError;
use plenary_cascade::metrics as names;
use plenary_cascade::wire::{encode_control, ControlMsg, MediaPacket};
use tokio::time::timeout;

mod raw;
use raw::bind;

const SECRET: &[u8] = b"metrics test secret";
const WAIT: Duration = Duration::from_secs(5);

/// Running totals: the debugging recorder zeroes values on each snapshot, so counters and
/// the inc/dec links gauge are summed; set-only gauges keep their largest value.
struct Totals {
    snap: Snapshotter,
    values: HashMap<String, f64>,
}

impl Totals {
    fn update(&mut self) {
        for (key, _, _, value) in self.snap.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let entry = self.values.entry(name).or_insert(0.0);
            match value {
                DebugValue::Counter(n) => *entry += n as f64,
                DebugValue::Gauge(g) if key.name() == names::LINKS => *entry += g.into_inner(),
                DebugValue::Gauge(g) => *entry = entry.max(g.into_inner()),
                DebugValue::Histogram(_) => {}
            }
        }
    }

    fn get(&mut self, name: &str) -> f64 {
        self.update();
        self.values.get(name).copied().unwrap_or(0.0)
    }

    /// Polls until `name` satisfies `ok`, for values recorded by background tasks.
    async fn wait_for(&mut self, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.get(name);
            if ok(v) || tokio::time::Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_record_traffic_rtt_failures_and_bad_frames() {
    let recorder = DebuggingRecorder::new();
    let mut m = Totals {
        snap: recorder.snapshotter(),
        values: HashMap::new(),
    };
    recorder.install().expect("first recorder");
    names::describe();

    let (a, _a_rx) = bind("node-a", SECRET);
    let (b, mut b_rx) = bind("node-b", SECRET);
    let a_link = a.connect(b.local_addr()).await.expect("connect");
    let mut b_link = timeout(WAIT, b_rx.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.get("plenary_cascade_links{}"), 2.0);

    let payload = [7u8; 500];
    let p = MediaPacket {
        track: 1,
        layer: 0,
        ssrc: 5,
        pt: 96,
        seq: 1,
        ts: 2,
        marker: false,
        audio_level: None,
        voice_activity: None,
        video_orientation: None,
        payload: &payload,
    };
    for _ in 0..10 {
        assert!(a_link.handle.send_media(&p));
    }
    for _ in 0..10 {
        timeout(WAIT, b_link.handle.recv_datagram())
            .await
            .expect("in time")
            .expect("open");
    }
    assert!(a_link.handle.send_control(ControlMsg::Draining));
    timeout(WAIT, b_link.control.recv()).await.expect("in time");
    let tx = m.get("plenary_cascade_tx_bytes_total{peer=node-b}");
    assert!(tx > 10.0 * 500.0, "tx {tx}");
    let rx = m
        .wait_for("plenary_cascade_rx_bytes_total{peer=node-a}", |v| v >= tx)
        .await;
    assert_eq!(rx, tx, "b received what a sent, datagrams and control");

    let big = vec![0; 4000];
    assert!(!a_link.handle.send_media(&MediaPacket {
        payload: &big,
        ..p.clone()
    }));
    assert_eq!(
        m.get("plenary_cascade_datagrams_dropped_total{peer=node-b,reason=too_large}"),
        1.0
    );

    let rtt = m
        .wait_for("plenary_cascade_rtt_seconds{peer=node-b}", |v| v > 0.0)
        .await;
    assert!(rtt > 0.0 && rtt < 1.0, "rtt {rtt}");

    let (c, _c_rx) = bind("node-c", b"not the cluster's");
    assert_eq!(
        c.connect(b.local_addr()).await.err(),
        Some(LinkError::Refused)
    );
    assert_eq!(m.get("plenary_cascade_auth_failures_total{}"), 1.0);

    let mut peer = raw::RawPeer::connect(b.local_addr(), SECRET, "raw").await;
    let mut raw_link = timeout(WAIT, b_rx.recv())
        .await
        .expect("in time")
        .expect("open");
    peer.send_frame(b"[]").await;
    let mut good = Vec::new();
    encode_control(&ControlMsg::Draining, &mut good);
    peer.send_raw(&good).await;
    timeout(WAIT, raw_link.control.recv())
        .await
        .expect("in time");
    assert_eq!(
        m.get("plenary_cascade_bad_frames_total{reason=bad_json}"),
        1.0
    );

    a.close();
    drop(peer);
    let links = m.wait_for("plenary_cascade_links{}", |v| v == 0.0).await;
    assert_eq!(links, 0.0, "every link uncounted once closed");
}
