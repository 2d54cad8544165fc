// WHEP viewer: POST a recvonly offer to {sfu}/whep/{room}, play the answer's audio and video,
// DELETE the Location on stop. Query: ?sfu=http://host:port&room=demo&token=...&autoplay=1
// When the connection fails (its node died or drained), it pulls again: first from the other
// nodes the answer named (Link rel="alternate"), then from the URL it started with.
'use strict';

// Page state, also read by the end-to-end tests.
const whep = {
  state: 'idle',
  pc: null,
  resource: null,
  token: '',
  error: null,
  lastDelete: null,
  alternates: [],
  repulls: 0,
  source: null,
};
window.whep = whep;

/** How long a `disconnected` connection may last before the page pulls again. */
const DISCONNECTED_GRACE_MS = 3000;

const form = document.getElementById('form');
const video = document.getElementById('video');
const statsLine = document.getElementById('stats');
let statsTimer = null;

function setState(state) {
  whep.state = state;
  document.getElementById('play').disabled = state !== 'idle';
  document.getElementById('stop').disabled = state === 'idle';
}

async function play() {
  setState('connecting');
  whep.error = null;
  whep.alternates = [];
  try {
    const base = Plenary.sfuBase(form.sfu.value);
    const room = Plenary.checkRoom(form.room.value.trim());
    whep.token = form.token.value.trim();
    await connect([`${base}/whep/${encodeURIComponent(room)}`], room);
  } catch (e) {
    whep.error = String(e);
    Plenary.status(String(e), true);
    await stop();
  }
}

/** Opens a connection to the first of `urls` that answers; throws when none does. */
async function connect(urls, room) {
  let lastError = null;
  for (const url of urls) {
    try {
      await connectTo(url, room);
      return;
    } catch (e) {
      lastError = e;
    }
  }
  throw lastError || new Error('no WHEP endpoint to try');
}

async function connectTo(url, room) {
  const pc = new RTCPeerConnection();
  whep.pc = pc;
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addTransceiver('video', { direction: 'recvonly' });
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    // A node that drains closes DTLS (close_notify): pull again without waiting for ICE.
    const dtls = e.receiver.transport;
    if (dtls) dtls.onstatechange = () => dtls.state === 'closed' && repull(pc, room);
    stream.addTrack(e.track);
    video.srcObject = stream;
    startPlayback();
  };
  let graceTimer = null;
  pc.onconnectionstatechange = () => {
    if (whep.pc !== pc) return;
    const s = pc.connectionState;
    Plenary.status(`Room ${room}: ${s}.`, s === 'failed');
    clearTimeout(graceTimer);
    if (s === 'connected') setState('playing');
    if (s === 'failed') repull(pc, room);
    if (s === 'disconnected') graceTimer = setTimeout(() => repull(pc, room), DISCONNECTED_GRACE_MS);
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await Plenary.gathered(pc);
    Plenary.status(`Room ${room}: sending the offer to ${url}...`);
    const { answer, resource, alternates } = await Plenary.postOffer(
      url,
      pc.localDescription.sdp,
      whep.token,
    );
    whep.resource = resource;
    whep.source = url;
    if (alternates.length) whep.alternates = alternates;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  } catch (e) {
    if (whep.pc === pc) whep.pc = null;
    pc.close();
    throw e;
  }
  Plenary.status(`Room ${room}: connecting media...`);
  if (!statsTimer) statsTimer = setInterval(showStats, 1000);
}

/** The source of `pc` is gone: pull again from the alternates, then the original URL. */
async function repull(pc, room) {
  if (whep.pc !== pc) return;
  whep.pc = null;
  whep.resource = null;
  pc.close();
  whep.repulls += 1;
  setState('connecting');
  const base = Plenary.sfuBase(form.sfu.value);
  const first = `${base}/whep/${encodeURIComponent(room)}`;
  const urls = [...whep.alternates.filter((u) => u !== whep.source), first];
  for (let attempt = 0; attempt < 5 && whep.state === 'connecting'; attempt++) {
    Plenary.status(`Room ${room}: source lost, pulling again (attempt ${attempt + 1})...`);
    try {
      await connect(urls, room);
      return;
    } catch (e) {
      whep.error = String(e);
      await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
    }
  }
  Plenary.status(`Room ${room}: no node answers; press Play to try again.`, true);
  await stop();
}

/** Plays with sound if the browser allows it, otherwise muted until the user unmutes. */
function startPlayback() {
  video.play().catch(() => {
    video.muted = true;
    video.play().catch(() => {});
    Plenary.status('Playing muted: the browser blocked autoplay with sound. Use the controls to unmute.');
  });
}

async function showStats() {
  if (!whep.pc) return;
  const s = await Plenary.inboundStats(whep.pc);
  const size = s.video.width ? `${s.video.width}x${s.video.height} ${s.video.fps} fps, ` : '';
  statsLine.textContent =
    `video: ${size}${s.video.framesDecoded} frames decoded, ${Plenary.kB(s.video.bytesReceived)}` +
    ` | audio: ${Plenary.kB(s.audio.bytesReceived)}`;
}

async function stop() {
  clearInterval(statsTimer);
  statsTimer = null;
  const { pc, resource, token } = whep;
  whep.pc = null;
  whep.resource = null;
  if (resource) whep.lastDelete = await Plenary.deleteResource(resource, token);
  if (pc) pc.close();
  video.srcObject = null;
  if (!whep.error) Plenary.status('Not playing.');
  setState('idle');
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  play();
});
document.getElementById('stop').addEventListener('click', stop);
window.addEventListener('pagehide', () => {
  if (whep.resource) Plenary.deleteResource(whep.resource, whep.token, true);
});

Plenary.fillInputs(form);
if (Plenary.flag('autoplay')) play();
