// WHIP publisher: camera and microphone, optionally with three simulcast layers (rid q/h/f),
// POSTed as a sendonly offer to {sfu}/whip/{room}; DELETE the Location on stop.
// Query: ?sfu=http://host:port&room=demo&token=...&simulcast=1&autostart=1
'use strict';

// Page state, also read by the end-to-end tests.
const whip = { state: 'idle', pc: null, stream: null, resource: null, token: '', error: null, lastDelete: null };
window.whip = whip;

const form = document.getElementById('form');
const preview = document.getElementById('preview');
const statsLine = document.getElementById('stats');
let statsTimer = null;

function setState(state) {
  whip.state = state;
  document.getElementById('start').disabled = state !== 'idle';
  document.getElementById('stop').disabled = state === 'idle';
  form.simulcast.disabled = state !== 'idle';
}

async function start() {
  setState('connecting');
  whip.error = null;
  try {
    const base = Plenary.sfuBase(form.sfu.value);
    const room = Plenary.checkRoom(form.room.value.trim());
    whip.token = form.token.value.trim();
    Plenary.status('Asking for the camera and microphone...');
    const stream = await navigator.mediaDevices.getUserMedia(Plenary.mediaConstraints);
    whip.stream = stream;
    preview.srcObject = stream;

    const pc = new RTCPeerConnection();
    whip.pc = pc;
    for (const track of stream.getAudioTracks()) {
      pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    }
    for (const track of stream.getVideoTracks()) {
      const init = { direction: 'sendonly', streams: [stream] };
      if (form.simulcast.checked) init.sendEncodings = Plenary.simulcastEncodings();
      pc.addTransceiver(track, init);
    }
    pc.onconnectionstatechange = () => {
      if (whip.pc !== pc) return;
      Plenary.status(`Room ${room}: ${pc.connectionState}.`, pc.connectionState === 'failed');
      if (pc.connectionState === 'connected') setState('publishing');
    };
    await pc.setLocalDescription(await pc.createOffer());
    await Plenary.gathered(pc);
    Plenary.status(`Room ${room}: sending the offer...`);
    const { answer, resource } = await Plenary.postOffer(
      `${base}/whip/${encodeURIComponent(room)}`,
      pc.localDescription.sdp,
      whip.token,
    );
    whip.resource = resource;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    Plenary.status(`Room ${room}: connecting media...`);
    statsTimer = setInterval(showStats, 1000);
  } catch (e) {
    whip.error = String(e);
    Plenary.status(String(e), true);
    await stop();
  }
}

async function showStats() {
  if (!whip.pc) return;
  const parts = (await Plenary.outboundStats(whip.pc)).map((s) => {
    const name = s.kind + (s.rid ? ' ' + s.rid : '');
    const size = s.width ? ` ${s.width}x${s.height} ${s.fps} fps` : '';
    return `${name}:${size} ${Plenary.kB(s.bytesSent)}`;
  });
  statsLine.textContent = parts.join(' | ');
}

async function stop() {
  clearInterval(statsTimer);
  statsTimer = null;
  const { pc, stream, resource, token } = whip;
  whip.pc = null;
  whip.stream = null;
  whip.resource = null;
  if (resource) whip.lastDelete = await Plenary.deleteResource(resource, token);
  if (pc) pc.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  preview.srcObject = null;
  statsLine.textContent = '';
  if (!whip.error) Plenary.status('Not publishing.');
  setState('idle');
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  start();
});
document.getElementById('stop').addEventListener('click', stop);
window.addEventListener('pagehide', () => {
  if (whip.resource) Plenary.deleteResource(whip.resource, whip.token, true);
});

Plenary.fillInputs(form);
form.simulcast.checked = Plenary.flag('simulcast');
if (Plenary.flag('autostart')) start();
