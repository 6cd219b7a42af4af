// A picture with two layers over it: the masks (a canvas at the picture's resolution, painted
// exactly) and the marks (a canvas at screen resolution: prompts, boxes, labels). The base is a
// canvas (images) or the <video> element itself (sessions). Pointer input comes out in picture
// pixels: a click, or a dragged box.

import { drawMarks, paintMasks } from "./render.js";

const MIN_BOX = 3; // picture pixels: a shorter drag is a click

export class Stage {
  constructor(container, { label, onClick, onBox, onHover }) {
    this.container = container;
    this.container.classList.add("stage");
    this.canvas = document.createElement("canvas"); // the image base
    this.canvas.className = "stage-base";
    this.masks = document.createElement("canvas");
    this.masks.className = "stage-masks";
    this.marks = document.createElement("canvas");
    this.marks.className = "stage-marks";
    this.marks.tabIndex = 0;
    this.marks.setAttribute("role", "img");
    this.marks.setAttribute("aria-label", label);
    this.base = this.canvas;
    this.container.replaceChildren(this.canvas, this.masks, this.marks);
    this.width = 0;
    this.height = 0;
    this.marksState = {};
    this.drag = null;
    this.tool = "point"; // "point": clicks are points; "box": drags are boxes
    this.handlers = { onClick, onBox, onHover };
    new ResizeObserver(() => this.redrawMarks()).observe(this.container);
    this.marks.addEventListener("pointerdown", (event) => this.pointerDown(event));
    this.marks.addEventListener("pointermove", (event) => this.pointerMove(event));
    this.marks.addEventListener("pointerup", (event) => this.pointerUp(event));
    this.marks.addEventListener("pointerleave", () => this.handlers.onHover?.(null));
    this.marks.addEventListener("contextmenu", (event) => event.preventDefault()); // right click: a negative point
  }

  /** Size the layers for a width x height picture; base: a <video> to show instead of the canvas. */
  setPicture(width, height, base = null) {
    this.width = width;
    this.height = height;
    this.canvas.width = this.masks.width = width;
    this.canvas.height = this.masks.height = height;
    const wanted = base ?? this.canvas;
    if (wanted !== this.base) {
      this.base.replaceWith(wanted);
      wanted.classList.add("stage-base");
      this.base = wanted;
    }
    this.container.style.aspectRatio = `${width} / ${height}`;
    this.container.style.setProperty("--aspect", String(width / height)); // the CSS fits the picture to the screen
    this.container.hidden = false;
    this.redrawMarks();
  }

  drawImage(source) {
    const context = this.canvas.getContext("2d");
    context.clearRect(0, 0, this.width, this.height);
    context.drawImage(source, 0, 0, this.width, this.height);
  }

  /** A dark picture with a line of text, for videos this browser cannot decode. */
  drawPlaceholder(text) {
    const context = this.canvas.getContext("2d");
    context.fillStyle = "#1f2937";
    context.fillRect(0, 0, this.width, this.height);
    context.fillStyle = "#9ca3af";
    context.font = `${Math.max(10, Math.round(this.width / 40))}px system-ui, sans-serif`;
    context.textAlign = "center";
    context.fillText(text, this.width / 2, this.height / 2, this.width - 8);
  }

  /** layers: [{mask: RleMask, colour, alpha}]; frame: recorded on the element (what is on screen). */
  paint(layers, frame = null) {
    paintMasks(this.masks.getContext("2d", { willReadFrequently: true }), this.width, this.height, layers);
    if (frame === null) delete this.masks.dataset.frame;
    else this.masks.dataset.frame = String(frame);
  }

  setMarks(state) {
    this.marksState = state;
    this.redrawMarks();
  }

  redrawMarks() {
    if (!this.width) return;
    const ratio = window.devicePixelRatio || 1;
    const rect = this.marks.getBoundingClientRect();
    this.marks.width = Math.max(1, Math.round(rect.width * ratio));
    this.marks.height = Math.max(1, Math.round(rect.height * ratio));
    const context = this.marks.getContext("2d");
    context.clearRect(0, 0, this.marks.width, this.marks.height);
    drawMarks(context, this.marks.width / this.width, { ...this.marksState, draft: this.drag?.box ?? null });
  }

  /** A picture of base + masks + marks at the picture's resolution (for downloads). */
  composite({ withBase = true, withMarks = true } = {}) {
    const canvas = document.createElement("canvas");
    canvas.width = this.width;
    canvas.height = this.height;
    const context = canvas.getContext("2d");
    if (withBase) context.drawImage(this.base, 0, 0, this.width, this.height);
    context.drawImage(this.masks, 0, 0);
    if (withMarks) drawMarks(context, 1, this.marksState);
    return canvas;
  }

  toPicture(event) {
    const rect = this.marks.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * this.width;
    const y = ((event.clientY - rect.top) / rect.height) * this.height;
    return [clamp(x, 0, this.width), clamp(y, 0, this.height)];
  }

  pointerDown(event) {
    if (!this.width || event.button > 2) return;
    this.marks.setPointerCapture(event.pointerId);
    const [x, y] = this.toPicture(event);
    this.drag = { x, y, button: event.button, shift: event.shiftKey, box: null };
  }

  pointerMove(event) {
    const [x, y] = this.toPicture(event);
    if (!this.drag) {
      this.handlers.onHover?.([x, y]);
      return;
    }
    const far = Math.abs(x - this.drag.x) >= MIN_BOX || Math.abs(y - this.drag.y) >= MIN_BOX;
    if (this.tool === "box" && this.drag.button !== 1 && far) {
      const label = this.drag.button === 2 || this.drag.shift || event.shiftKey ? 0 : 1;
      this.drag.box = [Math.min(x, this.drag.x), Math.min(y, this.drag.y), Math.max(x, this.drag.x), Math.max(y, this.drag.y), label];
      this.redrawMarks();
    }
  }

  pointerUp(event) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    const negative = drag.button === 2 || drag.shift || event.shiftKey;
    if (drag.box) {
      const [x1, y1, x2, y2] = drag.box;
      this.redrawMarks();
      this.handlers.onBox?.([round2(x1), round2(y1), round2(x2), round2(y2)], !negative);
    } else if (this.tool === "point" && drag.button !== 1) {
      this.handlers.onClick?.([round2(drag.x), round2(drag.y)], !negative);
    }
  }
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

function round2(value) {
  return Math.round(value * 100) / 100;
}
