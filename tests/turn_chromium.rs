//! Real Chromium, driven through chromedriver (WebDriver over HTTP), connects two
//! RTCPeerConnections with `iceTransportPolicy: 'relay'` through the server, over UDP and
//! over TCP to the server, and checks a data-channel message and the selected candidates.
//!
//! Relay port ranges used here: k = 25..=27.

mod common;

use common::webdriver::{require_browser, Driver, Options};
use common::*;
use serde_json::json;

/// The page-side test: two peer connections, relay-only, a message, then getStats.
const SCRIPT: &str = r#"
const done = arguments[arguments.length - 1];
const [url, username, credential] = arguments;
(async () => {
  const log = [];
  const cfg = { iceServers: [{ urls: url, username, credential }], iceTransportPolicy: 'relay' };
  const a = new RTCPeerConnection(cfg);
  const b = new RTCPeerConnection(cfg);
  const wire = (from, to, name) => {
    from.onicecandidate = (e) => {
      if (e.candidate) {
        log.push(name + ': ' + e.candidate.candidate);
        to.addIceCandidate(e.candidate).catch((err) => log.push(name + ' add: ' + err));
      }
    };
    from.onicecandidateerror = (e) =>
      log.push(name + ' candidate error ' + e.errorCode + ' ' + e.errorText + ' ' + e.url);
  };
  wire(a, b, 'a');
  wire(b, a, 'b');
  const timeout = (ms, what) => new Promise((_, reject) =>
    setTimeout(() => reject(new Error('timeout waiting for ' + what + '; log: ' + JSON.stringify(log))), ms));
  const dc = a.createDataChannel('plenary');
  const opened = new Promise((resolve) => { dc.onopen = resolve; });
  const received = new Promise((resolve) => {
    b.ondatachannel = (ev) => { ev.channel.onmessage = (m) => resolve(m.data); };
  });
  const offer = await a.createOffer();
  await a.setLocalDescription(offer);
  await b.setRemoteDescription(offer);
  const answer = await b.createAnswer();
  await b.setLocalDescription(answer);
  await a.setRemoteDescription(answer);
  await Promise.race([opened, timeout(20000, 'data channel open')]);
  const sent = 'hello through the relay ' + Math.random();
  dc.send(sent);
  const got = await Promise.race([received, timeout(10000, 'the message')]);
  const stats = await a.getStats();
  const byId = {};
  stats.forEach((s) => { byId[s.id] = s; });
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId[s.selectedCandidatePairId];
  });
  if (!pair) {
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
  }
  const local = pair ? byId[pair.localCandidateId] : null;
  const remote = pair ? byId[pair.remoteCandidateId] : null;
  a.close();
  b.close();
  return {
    sent, got,
    localType: local ? local.candidateType : null,
    remoteType: remote ? remote.candidateType : null,
    relayProtocol: local ? (local.relayProtocol || null) : null,
    localAddress: local ? (local.address || local.ip || null) : null,
    log,
  };
})().then(done, (e) => done({ error: String(e) }));
"#;

fn browser_relay(transport: &str, k: u16) {
    let Some(chromedriver) = require_browser() else {
        return;
    };
    let conf = fixture(INSTALL_FIXTURE);
    let secret = conf_value(&conf, "static-auth-secret");
    let mut spec = ServerSpec::new(conf, k);
    // Chrome relays between two relay candidates on 127.0.0.1; the fixture's
    // allowed-peer-ip=127.0.0.1 names it, and loopback needs the flag as well.
    spec.allow_loopback = true;
    spec.allowed_peer_ips = vec!["127.0.0.1".into()];
    let server = Server::start(&spec);
    let (username, credential) = plenary_cred(&secret, Some("chromium"), 600);

    let driver = Driver::start(&chromedriver, Options::default());
    driver.navigate("data:text/html,<title>plenary</title><p>relay test</p>");
    let url = format!("turn:127.0.0.1:{}?transport={transport}", server.port);
    let r = &driver.execute_async(SCRIPT, json!([url, username, credential]));
    eprintln!(
        "chromium over {transport}: local={} remote={} protocol={} address={}",
        r["localType"], r["remoteType"], r["relayProtocol"], r["localAddress"]
    );
    assert!(r.get("error").is_none(), "browser test failed: {r:#}");
    assert_eq!(
        r["got"], r["sent"],
        "data-channel message did not arrive: {r:#}"
    );
    assert_eq!(
        r["localType"],
        json!("relay"),
        "selected local candidate: {r:#}"
    );
    assert_eq!(
        r["remoteType"],
        json!("relay"),
        "selected remote candidate: {r:#}"
    );
    assert_eq!(
        r["relayProtocol"],
        json!(transport),
        "relay protocol: {r:#}"
    );
    assert_eq!(
        r["localAddress"],
        json!("127.0.0.1"),
        "relayed address: {r:#}"
    );
}

#[test]
fn chromium_data_channel_over_turn_udp() {
    browser_relay("udp", 25);
}

#[test]
fn chromium_data_channel_over_turn_tcp() {
    browser_relay("tcp", 26);
}
