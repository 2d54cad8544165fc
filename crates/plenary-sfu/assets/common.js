// Helpers shared by the Plenary demo pages (index.html, whip.html, whep.html).
// Plain browser JavaScript, loaded as a classic script before each page's own script.
'use strict';

const Plenary = {
  /** This page's query parameters (`?sfu=`, `?room=`, ...). */
  params: new URLSearchParams(location.search),

  /** The three simulcast layers, low to high; their index is the room API's layer number. */
  simulcastEncodings() {
    return [
      { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
      { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
      { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
    ];
  },

  /** Camera and microphone constraints used by the publishing pages. */
  mediaConstraints: {
    audio: true,
    video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
  },

  /**
   * Fills the common inputs from the query string: `sfu` (default: this page's origin,
   * when it was served over HTTP), `room` (default: "demo") and `token`.
   */
  fillInputs(form) {
    const origin = location.protocol.startsWith('http') ? location.origin : '';
    form.sfu.value = this.params.get('sfu') || origin;
    form.room.value = this.params.get('room') || 'demo';
    if (form.token) form.token.value = this.params.get('token') || '';
  },

  /** `true` for `?name=1`, `?name=true` or a bare `?name`. */
  flag(name) {
    const v = this.params.get(name);
    return v !== null && v !== '0' && v !== 'false';
  },

  /** The SFU base URL without a trailing slash; throws on anything that is not http(s). */
  sfuBase(value) {
    const url = new URL(value.trim());
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Error('the SFU URL must start with http:// or https://');
    }
    return url.origin + url.pathname.replace(/\/+$/, '');
  },

  /** Room names the server accepts (1-64 of A-Z a-z 0-9 _ -). */
  checkRoom(room) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(room)) {
      throw new Error('room must be 1-64 characters of A-Z, a-z, 0-9, _ and -');
    }
    return room;
  },

  /**
   * Waits until ICE gathering is complete, at most `ms`. The SFU is ICE-lite and does not
   * take trickled candidates, so offers and answers are sent with what was gathered by then.
   */
  gathered(pc, ms = 2000) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === 'complete') done();
      };
      const timer = setTimeout(done, ms);
      pc.addEventListener('icegatheringstatechange', check);
    });
  },

  /**
   * WHIP/WHEP: POSTs an SDP offer, returns `{ answer, resource }` where `resource` is the
   * absolute URL from the `Location` header (used for DELETE). Works cross-origin: the SFU
   * answers with CORS headers and exposes `Location`.
   */
  async postOffer(url, sdp, token) {
    const headers = { 'Content-Type': 'application/sdp' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const resp = await fetch(url, { method: 'POST', headers, body: sdp });
    const body = await resp.text();
    if (resp.status !== 201) {
      throw new Error(`${url}: HTTP ${resp.status} ${body.trim()}`);
    }
    const location = resp.headers.get('Location');
    // resp.url is where a 307 led; a cascade node names the room's other nodes as alternates.
    return {
      answer: body,
      resource: location ? new URL(location, resp.url).href : null,
      alternates: Plenary.alternates(resp.headers.get('Link')),
    };
  },

  /** The `rel="alternate"` targets of a Link header (a cascade node's other nodes). */
  alternates(link) {
    if (!link) return [];
    return link
      .split(/,(?=\s*<)/)
      .filter((l) => /;\s*rel="?alternate"?/i.test(l))
      .map((l) => (l.match(/<([^>]*)>/) || [])[1])
      .filter(Boolean);
  },

  /**
   * Ends a WHIP/WHEP session; returns the HTTP status (0 when the request failed).
   * `keepalive` lets the request outlive the page (for `pagehide`).
   */
  async deleteResource(url, token, keepalive = false) {
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    try {
      const resp = await fetch(url, { method: 'DELETE', headers, keepalive });
      return resp.status;
    } catch {
      return 0;
    }
  },

  /** Received-media totals of a peer connection, by kind. */
  async inboundStats(pc) {
    const out = {
      video: { framesDecoded: 0, bytesReceived: 0, packetsReceived: 0, width: 0, height: 0, fps: 0 },
      audio: { bytesReceived: 0, packetsReceived: 0 },
    };
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp' || !out[s.kind]) return;
      const o = out[s.kind];
      o.bytesReceived += s.bytesReceived || 0;
      o.packetsReceived += s.packetsReceived || 0;
      if (s.kind === 'video') {
        o.framesDecoded += s.framesDecoded || 0;
        if (s.frameWidth) {
          o.width = s.frameWidth;
          o.height = s.frameHeight;
          o.fps = s.framesPerSecond || 0;
        }
      }
    });
    return out;
  },

  /** Sent-media details of a peer connection: one entry per outgoing stream (simulcast layer). */
  async outboundStats(pc) {
    const out = [];
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      out.push({
        kind: s.kind,
        rid: s.rid || null,
        bytesSent: s.bytesSent || 0,
        packetsSent: s.packetsSent || 0,
        width: s.frameWidth || 0,
        height: s.frameHeight || 0,
        fps: s.framesPerSecond || 0,
        active: s.active !== false,
      });
    });
    out.sort((a, b) => (a.kind + (a.rid || '')).localeCompare(b.kind + (b.rid || '')));
    return out;
  },

  kB(bytes) {
    return (bytes / 1000).toFixed(0) + ' kB';
  },

  /** Shows a status line; errors are also logged to the console. */
  status(text, isError = false) {
    const el = document.getElementById('status');
    el.textContent = text;
    el.classList.toggle('error', isError);
    if (isError) console.error(text);
  },
};
