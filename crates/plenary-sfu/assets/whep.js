// WHEP viewer: POST a recvonly offer to {sfu}/whep/{room}, play the answer's audio and video,
// DELETE the Location on stop. Query: ?sfu=http://host:port&room=demo&token=...&autoplay=1
'use strict';

// Page state, also read by the end-to-end tests.
const whep = { state: 'idle', pc: null, resource: null, token: '', error: null, lastDelete: null };
window.whep = whep;

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
  try {
    const base = Plenary.sfuBase(form.sfu.value);
    const room = Plenary.checkRoom(form.room.value.trim());
    whep.token = form.token.value.trim();
    const pc = new RTCPeerConnection();
    whep.pc = pc;
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const stream = new MediaStream();
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      video.srcObject = stream;
      startPlayback();
    };
    pc.onconnectionstatechange = () => {
      if (whep.pc !== pc) return;
      Plenary.status(`Room ${room}: ${pc.connectionState}.`, pc.connectionState === 'failed');
      if (pc.connectionState === 'connected') setState('playing');
    };
    await pc.setLocalDescription(await pc.createOffer());
    await Plenary.gathered(pc);
    Plenary.status(`Room ${room}: sending the offer...`);
    const { answer, resource } = await Plenary.postOffer(
      `${base}/whep/${encodeURIComponent(room)}`,
      pc.localDescription.sdp,
      whep.token,
    );
    whep.resource = resource;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    Plenary.status(`Room ${room}: connecting media...`);
    statsTimer = setInterval(showStats, 1000);
  } catch (e) {
    whep.error = String(e);
    Plenary.status(String(e), true);
    await stop();
  }
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
