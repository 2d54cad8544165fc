// Demo room on the SFU's room API (docs/decisions/0003): JSON over a WebSocket at
// {sfu}/rooms/{room}, and two peer connections, so offers never cross:
//   publish:   we offer camera (3 simulcast layers) + microphone, the server answers;
//   subscribe: the server offers "slots" (one m-line each), we answer.
// Query: ?room=demo&name=Ada&token=...&sfu=http://host:port&autojoin=1 (&simulcast=0)
'use strict';

// Session state, also read by the end-to-end tests.
const room = {
  state: 'idle', // idle | joining | joined
  ws: null,
  room: '',
  myName: '',
  me: null, // our participant id
  iceServers: [],
  pub: null, // publish RTCPeerConnection
  sub: null, // subscribe RTCPeerConnection
  stream: null, // our camera + microphone
  camera: null, // { sender, mid, track } of our published camera
  participants: new Map(), // id -> { name, tracks: Map(track id -> {id, kind, source, layers}) }
  slots: new Map(), // subscribe mid -> { mid, kind, track? } from the latest `offer`
  heard: new Map(), // audio slot mid -> participant heard in it
  speaker: null,
  tiles: new Map(), // track id | 'p:' + participant | 'self' -> tile element
  audio: new Map(), // audio slot mid -> <audio>
  error: null,
  queue: Promise.resolve(), // server messages are handled one after another
  nodes: [], // cascade: base URLs of the room's nodes, from `joined` (ours first)
  base: '', // the node we are on
  rehomes: 0, // times we moved to another node (redirect, or our node died)
  lostTimer: null, // re-home when the subscribe connection stays disconnected
  lastMessageAt: 0, // when the server last said anything (it says `alive` every second)
  alive: false, // whether this server says `alive` (older ones do not)
};
window.room = room;

const form = document.getElementById('form');
const tilesBox = document.getElementById('tiles');
const audioBox = document.getElementById('audio');

function setState(state) {
  room.state = state;
  document.getElementById('join').disabled = state !== 'idle';
  document.getElementById('leave').disabled = state === 'idle';
  for (const name of ['room', 'name', 'token', 'sfu']) form[name].disabled = state !== 'idle';
}

/** One console line per message; shown by the browser's "Verbose" console level. */
function trace(dir, msg) {
  console.debug(`room ${dir} ${msg.type} ${JSON.stringify(msg).slice(0, 300)}`);
}

function send(msg) {
  if (room.ws && room.ws.readyState === WebSocket.OPEN) {
    trace('->', msg);
    room.ws.send(JSON.stringify(msg));
  }
}

function fail(e) {
  room.error = String(e && e.message ? e.message : e);
  Plenary.status(room.error, true);
}

/**
 * The status line while in a room: who else is here, kept current as people come and go,
 * then the last note (sound blocked, watching only). An error replaces it until the next join.
 */
function showPresence(note) {
  if (note !== undefined) room.note = note;
  if (room.state !== 'joined' || room.error) return;
  const n = room.participants.size;
  const who = `In room ${room.room} as ${room.myName}; ${n} other(s) here.`;
  Plenary.status(room.note ? `${who} ${room.note}` : who);
}

// ---- tiles ----

/** The tile for `key`, created on first use, labelled and tagged with its participant. */
function tile(key, participant, label) {
  let el = room.tiles.get(key);
  if (!el) {
    el = document.createElement('div');
    el.className = 'tile';
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // sound comes from the audio slots
    const note = document.createElement('span');
    note.className = 'note';
    const name = document.createElement('span');
    name.className = 'label';
    el.append(video, note, name);
    if (key === 'self') tilesBox.prepend(el);
    else tilesBox.append(el);
    room.tiles.set(key, el);
  }
  el.dataset.participant = participant || '';
  el.querySelector('.label').textContent = label;
  return el;
}

function note(el, text) {
  el.querySelector('.note').textContent = text;
}

function attach(el, track) {
  const video = el.querySelector('video');
  const current = video.srcObject && video.srcObject.getVideoTracks()[0];
  if (current !== track) video.srcObject = new MediaStream([track]);
  note(el, '');
}

function detach(el, text) {
  el.querySelector('video').srcObject = null;
  note(el, text);
}

function removeTile(key) {
  const el = room.tiles.get(key);
  if (!el) return;
  el.remove();
  room.tiles.delete(key);
}

/** Brings a participant's tiles in line with its tracks: one per video, or a name tile. */
function render(pid) {
  const p = room.participants.get(pid);
  const videos = p ? [...p.tracks.values()].filter((t) => t.kind === 'video') : [];
  for (const t of videos) {
    const label = t.source === 'screen' ? `${p.name} (screen)` : p.name;
    const el = tile(t.id, pid, label);
    if (!el.querySelector('video').srcObject) note(el, 'waiting for video…');
  }
  if (p && videos.length === 0) note(tile('p:' + pid, pid, p.name), 'no video');
  else removeTile('p:' + pid);
  for (const [key, el] of room.tiles) {
    if (el.dataset.participant === pid && key !== 'p:' + pid && !(p && p.tracks.has(key))) {
      removeTile(key);
    }
  }
  highlight();
}

function highlight() {
  const heard = new Set(room.heard.values());
  for (const el of room.tiles.values()) {
    const pid = el.dataset.participant;
    el.classList.toggle('speaking', pid !== '' && pid === room.speaker);
    el.classList.toggle('heard', pid !== '' && heard.has(pid));
  }
}

function setPaused(trackId, paused) {
  const el = room.tiles.get(trackId);
  if (!el) return;
  el.classList.toggle('paused', paused);
  note(el, paused ? 'paused (not among the last N)' : '');
}

// ---- participants and subscriptions ----

function addParticipant(id, name, tracks) {
  let p = room.participants.get(id);
  if (!p) {
    p = { name: name || id, tracks: new Map() };
    room.participants.set(id, p);
    showPresence();
  }
  p.name = name || p.name;
  for (const t of tracks) p.tracks.set(t.id, t);
  render(id);
  return p;
}

/** Subscribes to every video track in `tracks` (audio arrives through the audio slots). */
function subscribeVideo(tracks) {
  const wanted = tracks.filter((t) => t.kind === 'video').map((t) => ({ track: t.id }));
  if (wanted.length) send({ type: 'subscribe', tracks: wanted });
}

function participantName(pid) {
  const p = room.participants.get(pid);
  return p ? p.name : pid;
}

/** Connects each subscribe-side m-line to its tile or audio element, per the latest slots. */
function bindSlots() {
  const shown = new Set();
  for (const t of room.sub.getTransceivers()) {
    const slot = t.mid !== null ? room.slots.get(t.mid) : null;
    if (!slot || t.currentDirection === 'inactive' || t.currentDirection === 'stopped') continue;
    const track = t.receiver.track;
    if (slot.kind === 'audio') {
      playAudio(t.mid, track);
    } else if (slot.track) {
      const owner = [...room.participants].find(([, p]) => p.tracks.has(slot.track));
      const pid = owner ? owner[0] : '';
      attach(room.tiles.get(slot.track) || tile(slot.track, pid, participantName(pid)), track);
      shown.add(slot.track);
    }
  }
  for (const [key, el] of room.tiles) {
    if (key !== 'self' && !key.startsWith('p:') && !shown.has(key)) {
      detach(el, 'waiting for video…');
    }
  }
}

function playAudio(mid, track) {
  let el = room.audio.get(mid);
  if (!el) {
    el = document.createElement('audio');
    el.autoplay = true;
    audioBox.append(el);
    room.audio.set(mid, el);
  }
  const current = el.srcObject && el.srcObject.getAudioTracks()[0];
  if (current === track) return;
  el.srcObject = new MediaStream([track]);
  el.play().catch(() => {
    showPresence('The browser blocked sound: click anywhere on the page to hear the room.');
    document.addEventListener('click', () => room.audio.forEach((a) => a.play().catch(() => {})), {
      once: true,
    });
  });
}

// ---- publishing ----

async function publish(ws) {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(Plenary.mediaConstraints);
  } catch (e) {
    showPresence(`Watching only: no camera or microphone (${e.message}).`);
    return;
  }
  if (room.ws !== ws) {
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  room.stream = stream;
  const self = tile('self', room.me, `${room.myName} (you)`);
  const [video] = stream.getVideoTracks();
  if (video) attach(self, video);
  else note(self, 'no camera');

  const pc = new RTCPeerConnection({ iceServers: room.iceServers });
  room.pub = pc;
  const published = [];
  for (const track of stream.getAudioTracks()) {
    const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    published.push({ t, kind: 'audio', source: 'microphone' });
  }
  for (const track of stream.getVideoTracks()) {
    const init = { direction: 'sendonly', streams: [stream] };
    if (Plenary.params.get('simulcast') !== '0') init.sendEncodings = Plenary.simulcastEncodings();
    const t = pc.addTransceiver(track, init);
    published.push({ t, kind: 'video', source: 'camera' });
  }
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed') fail('The publish connection failed.');
  };
  await pc.setLocalDescription(await pc.createOffer());
  await Plenary.gathered(pc);
  if (room.ws !== ws) return;
  const cam = published.find((p) => p.kind === 'video');
  if (cam) room.camera = { sender: cam.t.sender, mid: cam.t.mid, track: `${room.me}-${cam.t.mid}` };
  send({
    type: 'publish',
    sdp: pc.localDescription.sdp,
    tracks: published.map(({ t, kind, source }) => ({ mid: t.mid, kind, source })),
  });
}

/** Dynacast: encode only the simulcast layers someone watches (index 0 = q ... 2 = f). */
async function layersWanted(msg) {
  const cam = room.camera;
  if (!cam || msg.track !== cam.track) return;
  const params = cam.sender.getParameters();
  if (!params.encodings || params.encodings.length < 2) return;
  params.encodings.forEach((enc, i) => {
    enc.active = msg.layers.includes(i);
  });
  await cam.sender.setParameters(params);
}

// ---- server messages ----

const handlers = {
  joined(m, ws) {
    room.me = m.participant;
    room.nodes = m.nodes || [];
    room.iceServers = m.ice_servers || [];
    setState('joined');
    const others = m.participants.filter((p) => p.id !== room.me);
    room.sub = new RTCPeerConnection({ iceServers: room.iceServers });
    room.sub.onconnectionstatechange = () => subscribeState(room.sub);
    for (const p of others) addParticipant(p.id, p.name, p.tracks);
    showPresence('');
    subscribeVideo(others.flatMap((p) => p.tracks));
    // Not awaited: the server's first offer need not wait for the camera and ICE gathering.
    publish(ws).catch(fail);
  },
  async publish_answer(m) {
    if (room.pub) await room.pub.setRemoteDescription({ type: 'answer', sdp: m.sdp });
  },
  async offer(m) {
    if (!room.sub) return;
    room.slots = new Map(m.slots.map((s) => [s.mid, s]));
    await room.sub.setRemoteDescription({ type: 'offer', sdp: m.sdp });
    await room.sub.setLocalDescription(await room.sub.createAnswer());
    await Plenary.gathered(room.sub);
    send({ type: 'answer', sdp: room.sub.localDescription.sdp });
    bindSlots();
  },
  // Cascade: this node is full or draining; the same room is served at m.url.
  redirect(m) {
    rehome(m.url, 'redirected');
  },
  // Cascade: the room's nodes changed (where to go if ours dies).
  nodes(m) {
    room.nodes = m.nodes || [];
  },
  // Joins and leaves since the last such message (coalesced by the server, applied as a set).
  participants(m) {
    for (const p of m.joined || []) {
      if (p.id !== room.me) addParticipant(p.id, p.name, []);
    }
    for (const id of m.left || []) {
      room.participants.delete(id);
      render(id);
    }
    showPresence();
  },
  track_published(m) {
    if (m.participant === room.me) {
      if (room.camera && m.track.source === 'camera') room.camera.track = m.track.id;
      return;
    }
    addParticipant(m.participant, '', [m.track]);
    subscribeVideo([m.track]);
  },
  track_unpublished(m) {
    const p = room.participants.get(m.participant);
    if (!p) return;
    p.tracks.delete(m.track.id);
    render(m.participant);
  },
  active_speaker(m) {
    room.speaker = m.participant;
    highlight();
  },
  audio_slot(m) {
    if (m.participant) room.heard.set(m.mid, m.participant);
    else room.heard.delete(m.mid);
    highlight();
  },
  paused(m) {
    setPaused(m.track, true);
  },
  resumed(m) {
    setPaused(m.track, false);
  },
  layers_wanted: layersWanted,
  error(m) {
    fail('Server: ' + m.message);
  },
};

function onMessage(ws, data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    console.warn('not JSON from the server:', data);
    return;
  }
  if (room.ws === ws) room.lastMessageAt = Date.now();
  if (msg.type === 'alive') {
    room.alive = true;
    return;
  }
  trace('<-', msg);
  const handler = handlers[msg.type];
  if (!handler) return;
  room.queue = room.queue
    .then(() => (room.ws === ws ? handler(msg, ws) : undefined))
    .catch(fail);
}

// ---- join / leave ----

function join() {
  room.error = null;
  let url;
  try {
    const base = Plenary.sfuBase(form.sfu.value);
    room.room = Plenary.checkRoom(form.room.value.trim());
    room.myName = form.name.value.trim() || 'guest';
    url = new URL(`${base}/rooms/${encodeURIComponent(room.room)}`);
  } catch (e) {
    fail(e);
    return;
  }
  room.base = url.origin;
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = form.token.value.trim();
  if (token) url.searchParams.set('token', token);
  setState('joining');
  Plenary.status(`Joining ${room.room}…`);
  const ws = new WebSocket(url);
  room.ws = ws;
  ws.onopen = () => send({ type: 'join', name: room.myName });
  ws.onmessage = (e) => onMessage(ws, e.data);
  ws.onclose = (e) => {
    if (room.ws !== ws) return;
    // Cascade: our node went away; the room goes on at its other nodes.
    const next = room.state === 'joined' ? room.nodes.find((n) => n !== room.base) : null;
    if (next) {
      rehome(next, 'our node went away');
      return;
    }
    const why = e.reason ? `${e.code} ${e.reason}` : `${e.code}`;
    room.error = `The connection to the server closed (${why}).`;
    leave(room.error, true);
  };
}

function leave(message = 'Not in a room.', isError = false) {
  const ws = room.ws;
  room.ws = null;
  if (ws) {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'leave' }));
    ws.close();
  }
  for (const pc of [room.pub, room.sub]) if (pc) pc.close();
  if (room.stream) room.stream.getTracks().forEach((t) => t.stop());
  Object.assign(room, { pub: null, sub: null, stream: null, camera: null, me: null, speaker: null,
    alive: false, lastMessageAt: 0 });
  // A handler of the old session may never settle (a pending setParameters on a closed
  // connection): the next session must not queue behind it.
  room.queue = Promise.resolve();
  for (const key of [...room.tiles.keys()]) removeTile(key);
  for (const el of room.audio.values()) el.remove();
  for (const map of [room.participants, room.slots, room.heard, room.audio]) map.clear();
  Plenary.status(message, isError);
  setState('idle');
}

// A node that vanishes (frozen, off the network) closes no socket: the page learns it from
// the subscribe connection, and re-homes after 3 s `disconnected` or at `failed`.
function subscribeState(pc) {
  if (!pc || room.sub !== pc) return;
  clearTimeout(room.lostTimer);
  const next = room.nodes.find((n) => n !== room.base);
  const lost = (why) => {
    if (room.sub !== pc) return;
    if (next) rehome(next, why);
    else fail('The subscribe connection failed.');
  };
  if (pc.connectionState === 'failed') lost('our node stopped answering');
  else if (pc.connectionState === 'disconnected') {
    room.lostTimer = setTimeout(() => lost('our node stopped answering for 3 s'), 3000);
  }
}

// A node that said `alive` every second and has been silent for 3.5 s is gone, even though
// its socket never closed (frozen, off the network): move on as if it had closed.
setInterval(() => {
  if (room.state !== 'joined' || !room.alive || Date.now() - room.lastMessageAt < 3500) return;
  const next = room.nodes.find((n) => n !== room.base);
  if (next) rehome(next, 'our node went silent');
  else leave('The server stopped answering.', true);
}, 500);

// Rejoins the same room on another node (same name and token).
function rehome(base, why) {
  const nodes = room.nodes;
  leave(`Moving to ${base} (${why})…`);
  room.nodes = nodes;
  room.rehomes += 1;
  form.sfu.value = base;
  join();
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  join();
});
document.getElementById('leave').addEventListener('click', () => leave());
window.addEventListener('pagehide', () => {
  if (room.ws) leave();
});

Plenary.fillInputs(form);
form.name.value = Plenary.params.get('name') || '';
if (Plenary.flag('autojoin')) join();
