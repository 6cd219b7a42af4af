// The Image tab: an image (dropped, picked, or one of the user's uploads), text prompts, exemplar
// boxes and clicks; every instance as a coloured mask with its outline, box, score and prompt.
// Each change asks the server again with the uploaded image's id, so its features come from the
// worker's cache (the reply says so, with its timings).

import { listAll } from "./api.js";
import { cocoDocument } from "./coco.js";
import { colourAt, cssColour, FILL_ALPHA, HIGHLIGHT_ALPHA } from "./render.js";
import { RleMask } from "./rle.js";
import { Stage } from "./stage.js";
import { $, canvasBlob, download, el, guarded, hideError, setStatus } from "./ui.js";

const AUTO_DELAY_MS = 200;

export class ImageTab {
  constructor(context) {
    this.context = context; // {api, checkUploadSize(file), noteModel(model)}
    this.api = context.api;
    this.upload = null; // the upload record of the image shown
    this.marks = { points: [], boxes: [] }; // [x, y, label], [x1, y1, x2, y2, label], in order of drawing
    this.history = []; // "points" | "boxes": what undo takes back
    this.negative = false;
    this.instances = [];
    this.reply = null;
    this.highlighted = null;
    this.pinned = null;
    this.sequence = 0;
    this.timer = null;
    this.stage = new Stage($("#image-stage"), {
      label: "Image with masks. Point tool: click to add a point, right click or Shift for a negative one. Box tool: drag a box.",
      onClick: (point, positive) => this.addMark("points", [...point, this.label(positive)]),
      onBox: (box, positive) => this.addMark("boxes", [...box, this.label(positive)]),
      onHover: (point) => this.hover(point),
    });
    this.bind();
  }

  bind() {
    const fileInput = $("#image-file");
    fileInput.addEventListener("change", () => fileInput.files[0] && this.openFile(fileInput.files[0]));
    const drop = $("#image-drop");
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("dragging");
      const file = event.dataTransfer.files[0];
      if (file) this.openFile(file);
    });
    $("#image-uploads").addEventListener("change", (event) => event.target.value && this.openUpload(event.target.value));
    $("#text-prompts").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.segment();
      }
    });
    $("#threshold").addEventListener("input", () => {
      $("#threshold-value").textContent = Number($("#threshold").value).toFixed(2);
      this.schedule();
    });
    for (const button of document.querySelectorAll("#image-tools [data-tool]")) {
      button.addEventListener("click", () => this.setTool(button.dataset.tool));
    }
    $("#image-negative").addEventListener("click", () => this.toggleNegative());
    $("#image-undo").addEventListener("click", () => this.undo());
    $("#image-clear").addEventListener("click", () => this.clearMarks());
    $("#segment").addEventListener("click", () => this.segment());
    $("#show-boxes").addEventListener("change", () => this.drawMarks());
    $("#download-coco").addEventListener("click", () => this.downloadCoco());
    $("#download-masks").addEventListener("click", () => this.downloadPicture(false));
    $("#download-overlay").addEventListener("click", () => this.downloadPicture(true));
  }

  /** Called when the tab is shown (after sign-in): the user's images for the picker. */
  async show() {
    await guarded(async () => {
      const uploads = await listAll(this.api, "uploads/");
      const images = uploads.filter((upload) => upload.kind === "image");
      const select = $("#image-uploads");
      select.replaceChildren(
        el("option", { value: "" }, images.length ? "Choose one of your images…" : "No uploaded images yet"),
        ...images.map((upload) => el("option", { value: upload.id }, `${upload.original_name} (${upload.width}×${upload.height})`)),
      );
      if (this.upload) select.value = this.upload.id;
    });
  }

  /** Forgets the image and its results (signing out: the next user must not see them). */
  leave() {
    this.upload = null;
    this.reply = null;
    this.instances = [];
    this.clearMarks();
    $("#image-stage").hidden = true;
    $("#image-empty").hidden = false;
    $("#image-name").textContent = "";
    $("#image-stats").textContent = "";
    $("#text-prompts").value = "";
    this.renderInstances();
  }

  shortcut(event) {
    const key = event.key.toLowerCase();
    if (key === "p") this.setTool("point");
    else if (key === "b") this.setTool("box");
    else if (key === "n") this.toggleNegative();
    else if (key === "z") this.undo(); // Z or Ctrl+Z
    else if (key === "escape") this.clearMarks();
    else if (key === "enter") this.segment();
    else return false;
    return true;
  }

  label(positive) {
    return positive !== this.negative ? 1 : 0;
  }

  setTool(tool) {
    this.stage.tool = tool;
    for (const button of document.querySelectorAll("#image-tools [data-tool]")) {
      button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
    }
  }

  toggleNegative() {
    this.negative = !this.negative;
    $("#image-negative").setAttribute("aria-pressed", String(this.negative));
  }

  addMark(kind, mark) {
    if (!this.upload) return;
    this.marks[kind].push(mark);
    this.history.push(kind);
    this.drawMarks();
    this.schedule();
  }

  undo() {
    const kind = this.history.pop();
    if (!kind) return;
    this.marks[kind].pop();
    this.drawMarks();
    this.schedule(true);
  }

  clearMarks() {
    this.marks = { points: [], boxes: [] };
    this.history = [];
    this.drawMarks();
  }

  async openFile(file) {
    hideError();
    if (!file.type.startsWith("image/") && file.type !== "") {
      setStatus(`${file.name} is not an image; videos go to the Video sessions tab.`);
      return;
    }
    if (!this.context.checkUploadSize(file)) return;
    await guarded(async () => {
      setStatus(`Uploading ${file.name}…`);
      const upload = await this.api.upload(file);
      if (upload.kind !== "image") {
        setStatus(`${file.name} is a ${upload.kind}; open it in the Video sessions tab.`);
        return;
      }
      await this.showImage(upload, file);
      await this.show();
    });
  }

  async openUpload(uploadId) {
    hideError();
    await guarded(async () => {
      setStatus("Loading the image…");
      const upload = await this.api.get(`uploads/${uploadId}/`);
      await this.showImage(upload, await this.api.blob(`uploads/${uploadId}/content/`));
    });
  }

  async showImage(upload, blob) {
    this.upload = upload;
    this.reply = null;
    this.instances = [];
    this.clearMarks();
    // The server reads pixels as stored (no EXIF rotation), so the picture is shown the same way.
    this.stage.setPicture(upload.width, upload.height);
    try {
      this.stage.drawImage(await createImageBitmap(blob, { imageOrientation: "none" }));
    } catch {
      this.stage.drawPlaceholder(`This browser cannot show ${upload.media_type}; masks still appear here.`);
    }
    this.stage.paint([]);
    $("#image-name").textContent = `${upload.original_name} · ${upload.width}×${upload.height}`;
    $("#image-empty").hidden = true;
    this.renderInstances();
    setStatus(`${upload.original_name} is ready: type a prompt, click on an object or draw a box.`);
    if (this.prompts().length) await this.segment();
  }

  /** The request's prompts: one per text phrase, the exemplar boxes, the clicks. */
  prompts() {
    const phrases = $("#text-prompts").value.split(/[,;\n]/).map((phrase) => phrase.trim()).filter(Boolean);
    const prompts = phrases.map((text) => ({ text }));
    const { points, boxes } = this.marks;
    if (boxes.length) {
      const exemplars = { boxes: boxes.map((box) => box.slice(0, 4)), box_labels: boxes.map((box) => box[4]) };
      // With one phrase the boxes refine that concept; otherwise they are a concept of their own.
      if (prompts.length === 1) Object.assign(prompts[0], exemplars);
      else prompts.push(exemplars);
    }
    if (points.length) prompts.push({ points: points.map((point) => point.slice(0, 2)), point_labels: points.map((point) => point[2]) });
    return prompts;
  }

  schedule(evenIfEmpty = false) {
    clearTimeout(this.timer);
    if (!this.upload) return;
    this.timer = setTimeout(() => {
      if (this.prompts().length) this.segment();
      else if (evenIfEmpty) this.showReply(null);
    }, AUTO_DELAY_MS);
  }

  async segment() {
    clearTimeout(this.timer);
    if (!this.upload) {
      setStatus("Choose an image first.");
      return;
    }
    const prompts = this.prompts();
    if (!prompts.length) {
      setStatus("Type a text prompt, click on an object or draw a box first.");
      return;
    }
    const sequence = ++this.sequence;
    const body = { image: this.upload.id, prompts, threshold: Number($("#threshold").value), mask_format: "rle" };
    setStatus("Segmenting…");
    $("#segment").setAttribute("aria-busy", "true");
    const reply = await guarded(() => this.api.post("segment/", body));
    if (sequence !== this.sequence) return; // a newer request is on its way
    $("#segment").removeAttribute("aria-busy");
    if (reply) {
      hideError();
      this.showReply(reply);
    } else {
      setStatus("");
    }
  }

  showReply(reply) {
    this.reply = reply;
    this.instances = [];
    this.highlighted = this.pinned = null;
    for (const [promptIndex, result] of (reply?.results ?? []).entries()) {
      for (const instance of result.instances) {
        this.instances.push({
          key: `${promptIndex}.${this.instances.length}`,
          prompt: promptLabel(result.prompt),
          score: instance.score,
          box: instance.box,
          mask: new RleMask(instance.mask),
          colour: colourAt(this.instances.length),
          visible: true,
        });
      }
    }
    if (reply) {
      this.context.noteModel(reply.model);
      const timings = reply.timings_ms;
      const ms = (value) => `${Math.round(value)} ms`;
      $("#image-stats").textContent =
        `${reply.cache_hit ? "Features from the cache" : "Features computed"}: total ${ms(timings.total)} ` +
        `(queued ${ms(timings.queued)}, compute ${ms(timings.compute)}, postprocess ${ms(timings.postprocess)}) ` +
        `on ${reply.worker}, model ${reply.model.name}.`;
      $("#image-stats").dataset.cacheHit = String(reply.cache_hit);
      setStatus(`${this.instances.length} instance${this.instances.length === 1 ? "" : "s"} found.`);
    }
    this.renderInstances();
    this.paint();
  }

  renderInstances() {
    const list = $("#instance-list");
    list.replaceChildren(
      ...this.instances.map((instance) => {
        const toggle = el("input", {
          type: "checkbox", checked: instance.visible, "aria-label": `Show ${instance.prompt} ${instance.score.toFixed(2)}`,
          onchange: (event) => {
            instance.visible = event.target.checked;
            this.paint();
          },
        });
        const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = cssColour(instance.colour);
        return el(
          "li",
          {
            dataset: { key: instance.key, colour: instance.colour.join(",") },
            class: instance.key === this.highlighted ? "highlighted" : "",
            onmouseenter: () => this.highlight(instance.key),
            onmouseleave: () => this.highlight(this.pinned),
          },
          el("label", {}, toggle, swatch, el("span", { class: "instance-name" }, instance.prompt)),
          el("span", { class: "score" }, instance.score.toFixed(2)),
          el("button", {
            type: "button", class: "link", "aria-label": `Highlight ${instance.prompt} ${instance.score.toFixed(2)}`,
            onclick: () => this.pin(instance.key),
          }, "◎"),
        );
      }),
    );
    $("#instance-count").textContent = this.reply ? `${this.instances.length}` : "";
    $("#image-downloads").hidden = !this.reply;
  }

  pin(key) {
    this.pinned = this.pinned === key ? null : key;
    this.highlight(this.pinned);
  }

  hover(point) {
    if (!point) {
      this.highlight(this.pinned);
      return;
    }
    const [x, y] = point;
    const top = [...this.instances].reverse().find((instance) => instance.visible && instance.mask.contains(x, y));
    this.highlight(top ? top.key : this.pinned);
  }

  highlight(key) {
    if (key === this.highlighted) return;
    this.highlighted = key;
    for (const item of document.querySelectorAll("#instance-list li")) {
      item.classList.toggle("highlighted", item.dataset.key === key);
    }
    this.paint();
  }

  paint() {
    if (!this.upload) return;
    const layers = this.instances
      .filter((instance) => instance.visible)
      .map((instance) => ({ mask: instance.mask, colour: instance.colour, alpha: instance.key === this.highlighted ? HIGHLIGHT_ALPHA : FILL_ALPHA }));
    this.stage.paint(layers);
    this.drawMarks();
  }

  drawMarks() {
    const boxes = $("#show-boxes").checked
      ? this.instances.filter((instance) => instance.visible).map((instance) => ({
          box: instance.box, colour: instance.colour, strong: instance.key === this.highlighted,
          label: `${instance.prompt} ${instance.score.toFixed(2)}`,
        }))
      : [];
    this.stage.setMarks({ boxes, prompts: this.marks });
  }

  visibleInstances() {
    return this.instances.filter((instance) => instance.visible);
  }

  downloadCoco() {
    const document_ = cocoDocument(this.upload, this.visibleInstances());
    download(new Blob([JSON.stringify(document_, null, 1)], { type: "application/json" }), `${stem(this.upload)}.coco.json`);
  }

  async downloadPicture(withBase) {
    const highlighted = this.highlighted;
    this.highlighted = null; // the picture shows every mask alike
    this.paint();
    const canvas = this.stage.composite({ withBase, withMarks: withBase });
    this.highlighted = highlighted;
    this.paint();
    download(await canvasBlob(canvas), `${stem(this.upload)}.${withBase ? "overlay" : "masks"}.png`);
  }
}

export function promptLabel(prompt) {
  if (prompt.kind === "interactive") return `clicks (${prompt.points?.length ?? 0})`;
  const boxes = prompt.boxes?.length ? `${prompt.boxes.length} exemplar${prompt.boxes.length === 1 ? "" : "s"}` : "";
  return [prompt.text, boxes].filter(Boolean).join(" + ") || "exemplars";
}

function stem(upload) {
  return upload.original_name.replace(/\.[^.]+$/, "") || "image";
}
