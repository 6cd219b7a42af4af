// The Live tab: a live session (docs/video-sessions.md, "Live sessions") fed from the camera or a
// local video file. Frames are drawn from a <video> into a canvas, sent as JPEG with the binary
// header (4-byte big-endian length, JSON {seq, ts}), at a capped rate and with few unanswered: the
// server keeps only the newest waiting frame (latest-wins) and reports the others as `skipped`.
// The view shows the newest computed frame with its own masks, so a click names the frame shown.

import { cssColour, FILL_ALPHA } from "./render.js";
import { RleMask } from "./rle.js";
import { SessionSocket } from "./session-socket.js";
import { Stage } from "./stage.js";
import { $, el, guarded, setStatus } from "./ui.js";
import { objectColour } from "./video.js";

const MAX_WIDTH = 640; // frames are scaled down to this: enough for the model, small on the wire
const MAX_UNANSWERED = 3; // a stalled server never makes us hold many pictures
const RATE_WINDOW_MS = 2000;

class LiveSocket extends SessionSocket {
  url() {
    return `${super.url()}live/`;
  }

  send(data) {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(data);
    return true;
  }
}

export class LiveTab {
  constructor({ api, showError }) {
    this.api = api;
    this.showError = showError;
    this.video = $("#live-video");
    this.capture = document.createElement("canvas");
    this.stage = new Stage($("#live-stage"), {
      label: "Live view: click an object to track it (right click or Shift: a negative point)",
      onClick: (point, positive) => this.click(point, positive),
    });
    this.session = null;
    this.video.addEventListener("loadeddata", () => this.renderControls()); // a size to stream at
    $("#live-camera").addEventListener("click", () => guarded(() => this.useCamera()));
    $("#live-file").addEventListener("change", (event) => event.target.files[0] && this.useFile(event.target.files[0]));
    $("#live-start").addEventListener("click", () => guarded(() => this.start()));
    $("#live-stop").addEventListener("click", () => guarded(() => this.stop()));
    $("#live-text-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendText();
    });
    $("#live-reset").addEventListener("click", () => this.socket?.send('{"type": "reset"}'));
    this.renderControls();
  }

  show() {}

  shortcut() {
    return false;
  }

  leave() {
    if (this.session) guarded(() => this.stop());
    this.setSource(null);
  }

  setSource(stream, url = null) {
    this.video.srcObject?.getTracks().forEach((track) => track.stop());
    if (this.video.src) URL.revokeObjectURL(this.video.src);
    this.video.srcObject = stream;
    if (url) this.video.src = url;
    else this.video.removeAttribute("src");
    this.video.load();
    this.renderControls();
  }

  async useCamera() {
    this.setSource(await navigator.mediaDevices.getUserMedia({ video: true, audio: false }));
    $("#live-source").textContent = "Camera";
    await this.video.play();
  }

  async useFile(file) {
    this.setSource(null, URL.createObjectURL(file));
    $("#live-source").textContent = file.name;
    await this.video.play();
  }

  async start() {
    if (this.session || !this.video.videoWidth) return;
    const scale = Math.min(1, MAX_WIDTH / this.video.videoWidth);
    this.capture.width = Math.round(this.video.videoWidth * scale);
    this.capture.height = Math.round(this.video.videoHeight * scale);
    this.stage.setPicture(this.capture.width, this.capture.height);
    const session = await this.api.post("sessions/", { live: true, store: false, mask_format: "rle" });
    this.session = session;
    Object.assign(this, { seq: 0, pending: new Map(), frameCount: 0, received: [], latencies: [], skipped: 0, shownSeq: null, lastSent: 0, encoding: false });
    $("#live-stage").dataset.session = session.id;
    this.socket = new LiveSocket(this.api, session.id, {
      onMessage: (message) => this.receive(message),
      onConnection: (state, error) => this.connection(state, error),
    });
    await this.socket.connect();
    this.renderControls();
    this.renderStats();
  }

  async stop() {
    const session = this.session;
    if (!session) return;
    this.session = null;
    clearTimeout(this.timer);
    this.socket.close();
    for (const { picture } of this.pending.values()) picture.close();
    this.pending.clear();
    this.renderControls();
    await this.api.delete(`sessions/${session.id}/`);
    setStatus(`Live session ${session.id.slice(0, 8)} closed.`);
  }

  connection(state, error) {
    $("#live-socket").textContent = state;
    if (state === "open") {
      if ($("#live-text").value.trim()) this.sendText();
      this.pump();
    } else if (state === "failed") {
      this.showError(error);
    } else if (state === "ended" && this.session) {
      this.session = null;
      this.renderControls();
    }
  }

  /** Sends the video's current picture when the rate allows, then comes back for the next. */
  async pump() {
    if (!this.session || this.encoding) return; // the call encoding a picture comes back itself
    clearTimeout(this.timer);
    const interval = 1000 / Math.max(1, Number($("#live-rate").value) || 1);
    const now = performance.now();
    if (this.pending.size < MAX_UNANSWERED && now - this.lastSent >= interval && !this.video.paused) {
      this.lastSent = now;
      const seq = this.seq++;
      this.encoding = true;
      const context = this.capture.getContext("2d");
      context.drawImage(this.video, 0, 0, this.capture.width, this.capture.height);
      const [jpeg, picture] = await Promise.all([
        new Promise((resolve) => this.capture.toBlob(resolve, "image/jpeg", 0.85)),
        createImageBitmap(this.capture),
      ]);
      this.encoding = false;
      const header = new TextEncoder().encode(JSON.stringify({ seq, ts: now }));
      const length = new Uint8Array(4);
      new DataView(length.buffer).setUint32(0, header.length); // big-endian
      if (this.socket?.send(new Blob([length, header, jpeg]))) this.pending.set(seq, { picture });
      else picture.close();
    }
    this.timer = setTimeout(() => this.pump(), Math.max(5, interval - (performance.now() - this.lastSent)));
  }

  receive(message) {
    if (message.type === "frame") this.showResult(message);
    else if (message.type === "skipped") {
      this.skipped += message.seqs.length;
      for (const seq of message.seqs) this.forget(seq);
    } else if (message.type === "prompt_result" && message.texts) {
      $("#live-texts").textContent = message.texts.join(", ");
    } else if (message.type === "prompt_result" && message.frame === this.shownFrame) {
      this.paint(message.objects);
    } else if (message.type === "edit_result") { // the only edit offered here is a reset
      $("#live-texts").textContent = (message.texts ?? []).join(", ") || "none";
    } else if (message.type === "error") {
      if (message.detail?.seq !== undefined) this.forget(message.detail.seq);
      this.showError({ name: "ApiError", code: message.code, message: message.message });
    }
    this.renderStats();
    if (["frame", "skipped", "error"].includes(message.type)) this.pump();
  }

  forget(seq) {
    this.pending.get(seq)?.picture.close();
    this.pending.delete(seq);
  }

  showResult(message) {
    const entry = this.pending.get(message.seq);
    const now = performance.now();
    this.frameCount++;
    this.received = [...this.received.filter((time) => now - time <= RATE_WINDOW_MS), now];
    if (typeof message.ts === "number") this.latencies.push(now - message.ts);
    if (!entry) return; // sent before a reconnection: its picture is gone
    this.stage.drawImage(entry.picture);
    this.forget(message.seq);
    this.shownSeq = message.seq;
    this.shownFrame = message.frame;
    this.paint(message.objects);
  }

  paint(objects) {
    const shown = objects.filter((object) => object.mask);
    this.stage.paint(
      shown.map((object) => ({ mask: new RleMask(object.mask), colour: objectColour(object.id), alpha: FILL_ALPHA })),
      this.shownSeq,
    );
    this.stage.setMarks({ boxes: shown.map((object) => ({ box: object.box, colour: objectColour(object.id), label: `#${object.id}` })) });
    $("#live-objects").replaceChildren(
      ...shown.map((object) => {
        const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = cssColour(objectColour(object.id));
        return el("li", { dataset: { object: object.id, colour: objectColour(object.id).join(",") } },
          swatch, el("span", { class: "instance-name" }, `#${object.id}${object.label ? ` ${object.label}` : ""}`),
          el("span", { class: "score" }, object.score.toFixed(2)));
      }),
    );
  }

  sendText() {
    const text = $("#live-text").value.trim();
    if (text && this.socket?.send(JSON.stringify({ type: "prompt", text }))) $("#live-text").value = "";
  }

  click(point, positive) {
    if (this.shownSeq === null || !this.session) return;
    this.socket.send(JSON.stringify({ type: "prompt", seq: this.shownSeq, points: [point], point_labels: [positive ? 1 : 0] }));
  }

  renderControls() {
    const streaming = Boolean(this.session);
    $("#live-start").disabled = streaming || !this.video.videoWidth;
    $("#live-stop").disabled = !streaming;
    $("#live-camera").disabled = $("#live-file").disabled = streaming;
  }

  renderStats() {
    const now = performance.now();
    const recent = this.received.filter((time) => now - time <= RATE_WINDOW_MS);
    this.latencies = this.latencies.slice(-10);
    const latencies = this.latencies;
    const latency = latencies.length ? Math.round(latencies.reduce((a, b) => a + b, 0) / latencies.length) : null;
    const stats = $("#live-stats");
    Object.assign(stats.dataset, { frames: this.frameCount, skipped: this.skipped, sent: this.seq });
    stats.textContent =
      `${this.frameCount} frames · ${(recent.length / (RATE_WINDOW_MS / 1000)).toFixed(1)} frames/s · ` +
      `latency ${latency ?? "–"} ms · ${this.skipped} skipped · ${this.seq} sent`;
  }
}
