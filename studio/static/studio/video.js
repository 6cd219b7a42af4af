// The Video sessions tab: the user's sessions (they persist, so one opened earlier, elsewhere or by
// the Python example opens here too), and one session at a time: scrub its frames, prompt on any
// frame (text, exemplar boxes, clicks), remove objects, reset, propagate and watch the frames
// arrive over the session's websocket, play the stored results back over the video, close it.

import { listAll } from "./api.js";
import { colourAt, cssColour, FILL_ALPHA, HIGHLIGHT_ALPHA } from "./render.js";
import { RleMask } from "./rle.js";
import { SessionSocket } from "./session-socket.js";
import { Stage } from "./stage.js";
import { $, el, formatBytes, guarded, hideError, setStatus } from "./ui.js";

const FRAME_PAGE = 100; // stored results fetched per request
const VIDEO_LOAD_TIMEOUT_MS = 20_000;
const ENDED = new Set(["closed", "expired", "failed"]);
const FIRST_CLICK_OBJECT_ID = 10000; // the server numbers clicked objects from here (text-found ones from 0)

/** Frames a propagation delivers: its legs as the server planned them (inference.legs). */
export function framesOfLegs(legs, frameCount) {
  let total = 0;
  for (const { reverse, first, max_frames: most } of legs) {
    const end = reverse ? (most === null ? 0 : Math.max(0, first - most)) : most === null ? frameCount - 1 : Math.min(frameCount - 1, first + most);
    total += Math.abs(end - first) + 1;
  }
  return total;
}

export function objectColour(id) {
  return colourAt(id >= FIRST_CLICK_OBJECT_ID ? id - FIRST_CLICK_OBJECT_ID + 5 : id);
}

function objectName(object) {
  return `#${object.id}${object.label ? ` ${object.label}` : ""}`;
}

export class VideoTab {
  constructor(context) {
    this.context = context;
    this.api = context.api;
    this.uploads = new Map();
    this.session = null;
    this.socket = null;
    this.video = el("video", { class: "stage-video", muted: true, playsInline: true, preload: "auto" });
    this.video.setAttribute("aria-hidden", "true");
    this.videoUrl = null;
    this.stage = new Stage($("#video-stage"), {
      label: "Video frame with masks. Point tool: click an object to track it (right click or Shift: negative). Box tool: drag an exemplar box.",
      onClick: (point, positive) => this.click(point, positive),
      onBox: (box, positive) => this.exemplar(box, positive),
      onHover: (point) => this.hover(point),
    });
    this.bind();
    this.resetState();
  }

  resetState() {
    this.frames = new Map(); // frame -> objects, as stored or streamed
    this.prompted = new Map(); // frame -> objects answered by a prompt since the last propagation
    this.covered = []; // [first, last] ranges of frames whose stored results are loaded
    this.loading = new Map(); // first frame of a page -> its request
    this.removed = new Set(); // objects removed since the last propagation
    this.clicks = []; // {objectId, frame, point: [x, y, label]} in order, for undo
    this.target = null; // the object clicks refine; null: a click starts a new object
    this.current = 0;
    this.negative = false;
    this.tracker = null; // the propagation being watched
    this.recovered = false; // rebuilt on another worker since it was opened
    this.highlighted = null;
    this.playing = false;
    this.playRun = 0;
    this.playable = false;
  }

  bind() {
    $("#video-refresh").addEventListener("click", () => this.show());
    $("#video-file").addEventListener("change", (event) => event.target.files[0] && this.uploadVideo(event.target.files[0]));
    $("#video-open-new").addEventListener("click", () => this.openNew());
    $("#frame-slider").addEventListener("input", (event) => this.showFrame(Number(event.target.value)));
    $("#frame-previous").addEventListener("click", () => this.step(-1));
    $("#frame-next").addEventListener("click", () => this.step(1));
    $("#video-play").addEventListener("click", () => this.togglePlay());
    $("#video-text-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.text();
    });
    for (const button of document.querySelectorAll("#video-tools [data-tool]")) {
      button.addEventListener("click", () => this.setTool(button.dataset.tool));
    }
    $("#video-negative").addEventListener("click", () => this.toggleNegative());
    $("#video-undo").addEventListener("click", () => this.undo());
    $("#video-new-object").addEventListener("click", () => this.setTarget(null));
    $("#propagate").addEventListener("click", () => this.propagate(false));
    $("#propagation-resume").addEventListener("click", () => this.propagate(true));
    $("#propagation-cancel").addEventListener("click", () => this.cancel());
    $("#session-reset").addEventListener("click", () => this.reset());
    $("#session-close").addEventListener("click", () => this.closeSession(this.session.id));
    $("#session-back").addEventListener("click", () => this.context.navigate("video"));
    this.video.addEventListener("seeked", () => this.drawFrame());
  }

  shortcut(event) {
    if (!this.session) return false;
    const key = event.key.toLowerCase();
    if (key === "p") this.setTool("point");
    else if (key === "b") this.setTool("box");
    else if (key === "n") this.toggleNegative();
    else if (key === "z") this.undo(); // Z or Ctrl+Z
    else if (key === "o" || key === "escape") this.setTarget(null);
    else if (key === "arrowleft") this.step(event.shiftKey ? -10 : -1);
    else if (key === "arrowright") this.step(event.shiftKey ? 10 : 1);
    else if (key === "home") this.showFrame(0);
    else if (key === "end") this.showFrame(this.session.frame_count - 1);
    else if (key === " ") this.togglePlay();
    else return false;
    return true;
  }

  // --- the list of sessions ---

  async show(sessionId = null) {
    if (!sessionId) await this.showList();
    else if (this.session?.id !== sessionId) await this.open(sessionId);
  }

  async showList() {
    this.leave();
    setStatus("");
    $("#session-view").hidden = true;
    $("#session-browser").hidden = false;
    await guarded(async () => {
      const [uploads, sessions] = await Promise.all([listAll(this.api, "uploads/"), listAll(this.api, "sessions/", { most: 200 })]);
      this.uploads = new Map(uploads.map((upload) => [upload.id, upload]));
      const videos = uploads.filter((upload) => upload.kind === "video");
      $("#video-uploads").replaceChildren(
        el("option", { value: "" }, videos.length ? "Choose one of your videos…" : "No uploaded videos yet"),
        ...videos.map((video) => el("option", { value: video.id }, `${video.original_name} (${video.frame_count} frames, ${formatBytes(video.size_bytes)})`)),
      );
      this.renderSessions(sessions);
    });
  }

  renderSessions(sessions) {
    $("#sessions-empty").hidden = sessions.length > 0;
    $("#session-rows").replaceChildren(
      ...sessions.map((session) => {
        const video = this.uploads.get(session.video);
        const ended = ENDED.has(session.status);
        const live = session.kind === "live"; // frames pushed by a client: no video to show here (yet)
        return el(
          "tr",
          { dataset: { session: session.id, status: session.status } },
          el("td", {}, el("code", { title: session.id }, session.id.slice(0, 8))),
          el("td", {}, el("span", { class: `badge status-${session.status}` }, session.status)),
          el("td", {}, live ? "live stream" : video ? video.original_name : "(deleted video)"),
          el("td", { class: "number" }, `${session.frames_stored} / ${session.frame_count}`),
          el("td", {}, new Date(session.created_at).toLocaleString()),
          el(
            "td",
            { class: "actions" },
            live ? null : el("button", { type: "button", onclick: () => this.context.navigate(`video/${session.id}`), "aria-label": `Open session ${session.id.slice(0, 8)}` }, "Open"),
            ended ? null : el("button", { type: "button", class: "danger", onclick: () => this.closeSession(session.id), "aria-label": `Close session ${session.id.slice(0, 8)}` }, "Close"),
          ),
        );
      }),
    );
  }

  async uploadVideo(file) {
    hideError();
    if (!this.context.checkUploadSize(file)) return;
    await guarded(async () => {
      setStatus(`Uploading ${file.name}…`);
      const upload = await this.api.upload(file);
      if (upload.kind !== "video") {
        setStatus(`${file.name} is an ${upload.kind}; open it in the Image tab.`);
        return;
      }
      await this.show();
      $("#video-uploads").value = upload.id;
      setStatus(`${file.name}: ${upload.frame_count} frames. Open a session on it.`);
    });
  }

  async openNew() {
    const videoId = $("#video-uploads").value;
    if (!videoId) {
      setStatus("Choose or upload a video first.");
      return;
    }
    hideError();
    const session = await guarded(() => {
      setStatus("Opening a session…");
      return this.api.post("sessions/", { video: videoId });
    });
    if (session) this.context.navigate(`video/${session.id}`);
  }

  async closeSession(sessionId) {
    hideError();
    const closed = await guarded(() => this.api.delete(`sessions/${sessionId}/`).then(() => true));
    if (!closed) return;
    setStatus(`Session ${sessionId.slice(0, 8)} closed.`);
    if (this.session?.id === sessionId) this.context.navigate("video");
    else await this.show();
  }

  // --- one session ---

  async open(sessionId) {
    this.leave();
    hideError();
    setStatus("Opening the session…");
    const session = await guarded(() => this.api.get(`sessions/${sessionId}/`));
    if (!session || session.kind === "live") {
      await this.showList(); // an error stays on screen above the list
      if (session) setStatus("Live sessions cannot be opened in Studio yet.");
      return;
    }
    this.resetState();
    this.session = session;
    $("#session-browser").hidden = true;
    $("#session-view").hidden = false;
    $("#session-title").textContent = `Session ${session.id.slice(0, 8)}`;
    const video = this.uploads.get(session.video) ?? (await guarded(() => this.api.get(`uploads/${session.video}/`)));
    $("#session-video").textContent = video ? `${video.original_name} · ${session.width}×${session.height} · ${session.frame_count} frames · ${session.fps} fps` : "";
    $("#frame-slider").max = String(Math.max(0, session.frame_count - 1));
    this.stage.setPicture(session.width, session.height);
    this.stage.drawPlaceholder("Loading the video…");
    this.renderStatus();
    this.renderProgress();
    if (!ENDED.has(session.status)) {
      this.socket = new SessionSocket(this.api, session.id, {
        onMessage: (message) => this.onMessage(message),
        onConnection: (state, error) => this.onConnection(state, error),
      });
      this.socket.connect();
    }
    this.loadVideo(session); // the masks do not wait for the picture
    await this.showFrame(0);
    setStatus(ENDED.has(session.status) ? `This session is ${session.status}; only its record remains.` : "Click an object, draw an exemplar box or type a text prompt, then propagate.");
  }

  /**
   * The video itself, for the picture under the masks. A <video> cannot send the key, so the file
   * is fetched with it and played from a blob: URL (the whole file is held in memory).
   */
  async loadVideo(session) {
    const blob = await guarded(() => this.api.blob(`uploads/${session.video}/content/`));
    if (!blob || this.session !== session) return;
    this.videoUrl = URL.createObjectURL(blob);
    this.video.src = this.videoUrl;
    const playable = await new Promise((resolve) => {
      this.video.addEventListener("loadeddata", () => resolve(true), { once: true });
      this.video.addEventListener("error", () => resolve(false), { once: true });
      setTimeout(() => resolve(false), VIDEO_LOAD_TIMEOUT_MS);
    });
    if (this.session !== session) return;
    if (playable) {
      this.playable = true;
      this.stage.setPicture(session.width, session.height, this.video);
      this.video.currentTime = (this.current + 0.5) / session.fps; // then "seeked" draws the current frame
    } else {
      this.stage.drawPlaceholder(`This browser cannot play this video (${blob.type}); masks are shown on a blank frame.`);
    }
  }

  /** Leaves the open session (its socket, video and state); the session itself stays as it is. */
  leave() {
    this.socket?.close();
    this.socket = null;
    this.pause();
    if (this.videoUrl) URL.revokeObjectURL(this.videoUrl);
    this.videoUrl = null;
    this.video.removeAttribute("src");
    this.session = null;
  }

  onConnection(state, error) {
    const text = { connecting: "connecting…", open: "live", retrying: "reconnecting…", ended: "ended", closed: "", failed: "refused" }[state];
    $("#socket-state").textContent = text ? `websocket ${text}` : "";
    $("#socket-state").dataset.state = state;
    if (error) this.context.showError(error);
  }

  onMessage(message) {
    if (!this.session) return;
    if (message.type === "status") {
      this.session.status = message.status;
      if (message.propagation) this.session.propagation = message.propagation;
      if (message.status === "recovering") this.recovered = false;
      if (message.recovered) this.recovered = true;
      this.renderStatus();
      // A rebuilt session's propagation was interrupted (no end event comes): its record says so.
      if (message.recovered) this.refreshSession();
    } else if (message.type === "frame") {
      this.receiveFrame(message);
    } else if (message.type === "progress") {
      if (this.tracker) this.tracker.serverDone = message.frames_done;
    } else if (["done", "cancelled", "error"].includes(message.type) && message.frames_done !== undefined) {
      this.finishPropagation(message);
    } else if (message.type === "error") {
      this.context.showError({ name: "ApiError", code: message.code, message: message.message });
    }
  }

  renderStatus() {
    const { status, propagation } = this.session;
    const badge = $("#session-status");
    badge.textContent = status;
    badge.className = `badge status-${status}`;
    const banner = $("#session-banner");
    banner.hidden = true;
    if (status === "recovering") {
      banner.textContent = "The model worker holding this session stopped: another worker is rebuilding it from its prompt log…";
      banner.hidden = false;
    } else if (this.recovered) {
      banner.textContent = "Recovered on another worker. Stored frames are kept; resume the propagation if it was interrupted.";
      banner.hidden = false;
    } else if (ENDED.has(status)) {
      banner.textContent = `This session is ${status}: its prompts are listed in its record; frames and prompting are gone.`;
      banner.hidden = false;
    }
    const open = !ENDED.has(status);
    const ready = status === "ready"; // prompts and propagation need it (starting, recovering: wait)
    for (const id of ["propagate", "session-reset", "video-undo", "video-text-submit"]) $(`#${id}`).disabled = !ready;
    $("#session-close").disabled = !open;
    $("#propagation-cancel").disabled = status !== "propagating";
    $("#propagation-resume").hidden = !(ready && ["cancelled", "interrupted"].includes(propagation?.state));
  }

  // --- frames ---

  isCovered(frame) {
    return this.covered.some(([first, last]) => first <= frame && frame <= last);
  }

  objectsOn(frame) {
    const objects = this.prompted.get(frame) ?? this.frames.get(frame);
    return objects?.filter((object) => !this.removed.has(object.id));
  }

  /** Stored results from `first` on, one page; frames the page skips have none stored. */
  async loadFrom(first) {
    if (this.loading.has(first)) return this.loading.get(first);
    const session = this.session;
    const request = this.api.get(`sessions/${session.id}/frames/`, { from_frame: first, limit: FRAME_PAGE }).then((page) => {
      if (this.session !== session) return;
      for (const result of page.results) {
        if (!this.tracker?.received.has(result.frame)) this.frames.set(result.frame, result.objects);
      }
      const last = page.results.length < FRAME_PAGE ? session.frame_count - 1 : page.results.at(-1).frame;
      this.covered.push([first, last]);
    });
    this.loading.set(first, request);
    try {
      await request;
    } finally {
      this.loading.delete(first);
    }
  }

  async showFrame(frame, { seek = true } = {}) {
    if (!this.session) return;
    frame = Math.max(0, Math.min(this.session.frame_count - 1, frame));
    this.current = frame;
    $("#frame-slider").value = String(frame);
    $("#frame-number").textContent = `${frame + 1} / ${this.session.frame_count}`;
    if (seek && this.playable && !this.playing) this.video.currentTime = (frame + 0.5) / this.session.fps; // mid-frame: no rounding at the edges
    if (!this.frames.has(frame) && !this.prompted.has(frame) && !this.isCovered(frame) && !ENDED.has(this.session.status)) {
      await guarded(() => this.loadFrom(frame));
      if (this.current !== frame) return;
    }
    this.drawFrame();
  }

  /** Draws the current frame's masks; the masks layer names the frame once its results are known. */
  drawFrame() {
    if (!this.session) return;
    const frame = this.current;
    const known = this.frames.has(frame) || this.prompted.has(frame) || this.isCovered(frame);
    const objects = this.objectsOn(frame) ?? [];
    this.stage.paint(
      objects.map((object) => ({
        mask: maskOf(object),
        colour: objectColour(object.id),
        alpha: object.id === this.highlighted ? HIGHLIGHT_ALPHA : FILL_ALPHA,
      })),
      known ? frame : null,
    );
    this.stage.setMarks({
      boxes: objects.map((object) => ({
        box: object.box, colour: objectColour(object.id), strong: object.id === this.target || object.id === this.highlighted,
        label: `${objectName(object)} ${object.score.toFixed(2)}`,
      })),
      prompts: { points: this.clicks.filter((click) => click.frame === frame).map((click) => click.point), boxes: [] },
    });
    this.renderObjects(objects);
  }

  renderObjects(objects) {
    $("#object-list").replaceChildren(
      ...objects.map((object) => {
        const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = cssColour(objectColour(object.id));
        const clicked = object.id >= FIRST_CLICK_OBJECT_ID;
        return el(
          "li",
          {
            dataset: { object: object.id, colour: objectColour(object.id).join(",") },
            class: object.id === this.target ? "target" : "",
            onmouseenter: () => this.highlight(object.id),
            onmouseleave: () => this.highlight(null),
          },
          swatch,
          el("span", { class: "instance-name" }, objectName(object)),
          el("span", { class: "score" }, object.score.toFixed(2)),
          clicked
            ? el("button", {
                type: "button", class: "link", "aria-pressed": String(object.id === this.target), title: "Refine with clicks",
                "aria-label": `Refine object ${object.id} with clicks`, onclick: () => this.setTarget(object.id),
              }, "✎")
            : null,
          el("button", {
            type: "button", class: "link danger", title: "Remove (stop tracking)", "aria-label": `Remove object ${object.id}`,
            onclick: () => this.removeObject(object.id),
          }, "✕"),
        );
      }),
    );
    $("#objects-empty").hidden = objects.length > 0;
    $("#video-target").textContent = this.target === null ? "a click starts a new object" : `clicks refine #${this.target}`;
  }

  hover(point) {
    if (!point) return this.highlight(null);
    const top = [...(this.objectsOn(this.current) ?? [])].reverse().find((object) => maskOf(object).contains(point[0], point[1]));
    this.highlight(top ? top.id : null);
  }

  highlight(id) {
    if (id === this.highlighted) return;
    this.highlighted = id;
    this.drawFrame();
  }

  step(delta) {
    if (this.session) this.showFrame(this.current + delta);
  }

  // --- playback of the stored results over the video ---

  togglePlay() {
    if (this.playing) this.pause();
    else this.play();
  }

  play() {
    if (!this.session) return;
    this.playing = true;
    $("#video-play").textContent = "Pause";
    $("#video-play").setAttribute("aria-pressed", "true");
    if (this.current >= this.session.frame_count - 1) this.showFrame(0);
    const run = ++this.playRun; // a callback chain of an earlier play() stops at once
    if (this.playable) {
      const onFrame = (now, metadata) => {
        if (!this.playing || run !== this.playRun) return;
        this.showFrame(Math.round(metadata.mediaTime * this.session.fps), { seek: false });
        this.prefetch();
        this.video.requestVideoFrameCallback(onFrame);
      };
      this.video.requestVideoFrameCallback(onFrame);
      this.video.addEventListener("ended", () => this.pause(), { once: true });
      this.video.play().catch(() => this.pause());
    } else {
      // No picture to follow: step through the frames at the video's rate.
      this.playTimer = setInterval(() => {
        if (this.current >= this.session.frame_count - 1) this.pause();
        else this.showFrame(this.current + 1);
      }, 1000 / this.session.fps);
    }
  }

  pause() {
    this.playing = false;
    clearInterval(this.playTimer);
    if (!this.video.paused) this.video.pause();
    $("#video-play").textContent = "Play";
    $("#video-play").setAttribute("aria-pressed", "false");
  }

  prefetch() {
    const ahead = Math.min(this.session.frame_count - 1, this.current + FRAME_PAGE / 2);
    if (!this.isCovered(ahead) && !this.loading.size) this.loadFrom(this.current).catch(() => {});
  }

  // --- prompts ---

  label(positive) {
    return positive !== this.negative ? 1 : 0;
  }

  setTool(tool) {
    this.stage.tool = tool;
    for (const button of document.querySelectorAll("#video-tools [data-tool]")) {
      button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
    }
  }

  toggleNegative() {
    this.negative = !this.negative;
    $("#video-negative").setAttribute("aria-pressed", String(this.negative));
  }

  setTarget(objectId) {
    this.target = objectId;
    this.drawFrame();
  }

  /** A prompt on the current frame; the answer's objects replace theirs on that frame. */
  async prompt(body) {
    hideError();
    this.pause();
    const frame = this.current;
    setStatus("Prompting…");
    const answer = await guarded(() => this.api.post(`sessions/${this.session.id}/prompts/`, { frame, ...body }));
    if (!answer) return null;
    const answered = new Set(answer.objects.map((object) => object.id));
    const kept = (this.objectsOn(frame) ?? []).filter((object) => !answered.has(object.id));
    for (const object of answer.objects) this.removed.delete(object.id);
    this.prompted.set(frame, [...kept, ...answer.objects]);
    setStatus(`${answer.objects.length} object${answer.objects.length === 1 ? "" : "s"} on frame ${frame + 1}. Propagate to track them through the video.`);
    if (frame === this.current) this.drawFrame();
    return answer;
  }

  async click(point, positive) {
    if (!this.session || this.busy()) return;
    const mark = [...point, this.label(positive)];
    const body = { points: [point], point_labels: [mark[2]], ...(this.target === null ? {} : { object_id: this.target }) };
    const answer = await this.prompt(body);
    if (!answer) return;
    this.clicks.push({ objectId: answer.object_id, frame: answer.frame, point: mark });
    this.target = answer.object_id; // the next clicks refine this object, until "new object"
    this.drawFrame();
  }

  async exemplar(box, positive) {
    if (!this.session || this.busy()) return;
    await this.prompt({ boxes: [box], box_labels: [this.label(positive)] });
  }

  async text() {
    const text = $("#video-text").value.trim();
    if (!text || !this.session || this.busy()) return;
    if (await this.prompt({ text })) $("#video-text").value = "";
  }

  busy() {
    const status = this.session.status;
    if (status === "ready") return false;
    setStatus(status === "propagating" ? "Wait for the propagation to finish, or cancel it." : `The session is ${status}.`);
    return true;
  }

  /**
   * Undo the last click. The server has no undo, so its object is removed and rebuilt from the
   * clicks that remain (as a new object), through the public API like any other client.
   */
  async undo() {
    if (!this.session || this.busy()) return;
    const last = this.clicks.at(-1);
    if (!last) {
      setStatus("No click to undo.");
      return;
    }
    hideError();
    const removed = await guarded(() => this.api.post(`sessions/${this.session.id}/remove-object/`, { object_id: last.objectId }));
    if (!removed) return;
    this.clicks.pop();
    this.forget(last.objectId);
    const remaining = this.clicks.filter((click) => click.objectId === last.objectId);
    this.clicks = this.clicks.filter((click) => click.objectId !== last.objectId);
    this.target = null;
    const shown = this.current;
    let objectId = null;
    for (const click of remaining) {
      this.current = click.frame;
      const body = { points: [click.point.slice(0, 2)], point_labels: [click.point[2]], ...(objectId === null ? {} : { object_id: objectId }) };
      const answer = await this.prompt(body);
      if (!answer) break;
      objectId = answer.object_id;
      this.clicks.push({ ...click, objectId });
    }
    this.target = objectId;
    await this.showFrame(shown);
  }

  forget(objectId) {
    this.removed.add(objectId);
    if (this.target === objectId) this.target = null;
  }

  async removeObject(objectId) {
    hideError();
    const removed = await guarded(() => this.api.post(`sessions/${this.session.id}/remove-object/`, { object_id: objectId }));
    if (!removed) return;
    this.forget(objectId);
    this.clicks = this.clicks.filter((click) => click.objectId !== objectId);
    setStatus(`Object #${objectId} is no longer tracked.`);
    this.drawFrame();
  }

  async reset() {
    hideError();
    const done = await guarded(() => this.api.post(`sessions/${this.session.id}/reset/`));
    if (!done) return;
    const session = this.session;
    this.resetState();
    this.session = session;
    this.playable = Boolean(this.videoUrl) && this.video.readyState >= 2;
    setStatus("Every prompt and object is forgotten.");
    await this.showFrame(0);
  }

  // --- propagation ---

  async propagate(resume) {
    if (!this.session || this.busy()) return;
    hideError();
    this.pause();
    const direction = $("#propagation-direction").value;
    // Frames can arrive before the 202 does: the tracker exists before the request leaves.
    const tracker = { expected: null, received: new Set(), started: performance.now(), ended: null, serverDone: 0, finished: null };
    this.tracker = tracker;
    const body = resume ? { resume: true } : { direction, start_frame: this.current };
    setStatus(resume ? "Resuming the propagation…" : `Propagating ${direction} from frame ${this.current + 1}…`);
    const reply = await guarded(() => this.api.post(`sessions/${this.session.id}/propagate/`, body));
    if (!reply) {
      if (this.tracker === tracker) this.tracker = null;
      this.renderProgress();
      return;
    }
    tracker.expected = framesOfLegs(reply.propagation.legs ?? [], this.session.frame_count);
    this.recovered = false;
    this.prompted.clear();
    this.removed.clear();
    this.session.propagation = reply.propagation;
    this.renderProgress();
  }

  receiveFrame(message) {
    const tracker = this.tracker;
    if (tracker) tracker.received.add(message.frame);
    if (message.masks_omitted) {
      // Beyond the unacknowledged window the masks stay on the server: read them from the store.
      this.frames.delete(message.frame);
      this.covered = this.covered.filter(([first, last]) => message.frame < first || message.frame > last);
    } else {
      this.frames.set(message.frame, message.objects);
      this.prompted.delete(message.frame);
    }
    if ($("#follow-propagation").checked && !this.playing) this.showFrame(message.frame);
    this.renderProgress();
  }

  finishPropagation(message) {
    const tracker = this.tracker;
    if (tracker) {
      tracker.finished = message.type;
      tracker.ended = performance.now();
    }
    this.renderProgress();
    const count = message.frames_done;
    if (message.type === "done") setStatus(`Propagation done: ${count} frame${count === 1 ? "" : "s"}.`);
    else if (message.type === "cancelled") setStatus(`Propagation cancelled after ${count} frames; resume continues it.`);
    else this.context.showError({ name: "ApiError", code: message.code ?? "propagation_failed", message: message.message ?? "The propagation failed." });
    this.refreshSession();
  }

  /** The session's record again: its propagation's state decides whether it can be resumed. */
  async refreshSession() {
    const session = this.session;
    const record = await guarded(() => this.api.get(`sessions/${session.id}/`));
    if (!record || this.session !== session) return;
    session.propagation = record.propagation;
    const tracker = this.tracker;
    if (tracker && !tracker.finished && record.propagation?.state && record.propagation.state !== "running") {
      tracker.finished = record.propagation.state;
      tracker.ended = performance.now();
      this.renderProgress();
    }
    this.renderStatus();
  }

  async cancel() {
    hideError();
    await guarded(() => this.api.post(`sessions/${this.session.id}/cancel/`));
  }

  renderProgress() {
    const tracker = this.tracker;
    const bar = $("#propagation-progress");
    const text = $("#propagation-text");
    if (!tracker) {
      bar.hidden = true;
      text.textContent = "";
      return;
    }
    const received = tracker.received.size;
    bar.hidden = false;
    bar.max = tracker.expected ?? Math.max(1, received);
    bar.value = received;
    const seconds = ((tracker.ended ?? performance.now()) - tracker.started) / 1000;
    const rate = seconds > 0 ? (received / seconds).toFixed(1) : "–";
    const state = tracker.finished ? ` · ${tracker.finished}` : "";
    text.textContent = `${received} / ${tracker.expected ?? "?"} frames · ${rate} frames/s${state}`;
    text.dataset.received = String(received);
    text.dataset.expected = String(tracker.expected ?? "");
    text.dataset.finished = tracker.finished ?? "";
  }
}

function maskOf(object) {
  object._mask ??= new RleMask(object.mask);
  return object._mask;
}
