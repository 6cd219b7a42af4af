// Drawing: masks into pixels at the image's own resolution (exact, so what is shown is what the
// server answered), and prompts, boxes and labels as vector marks at the screen's resolution.

// Tableau 10 without its grey: distinct hues that read on photos.
export const PALETTE = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207], [255, 187, 120],
];

export const FILL_ALPHA = 0.45;
export const HIGHLIGHT_ALPHA = 0.7;

export function colourAt(index) {
  return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

export function cssColour([r, g, b], alpha = 1) {
  return alpha === 1 ? `rgb(${r} ${g} ${b})` : `rgb(${r} ${g} ${b} / ${alpha})`;
}

let scratch = new Uint8Array(0);

/**
 * Paints masks into a fresh ImageData of width x height: each layer's pixels in its colour at its
 * alpha, and its outline (set pixels with a 4-neighbour outside the mask) opaque. Nothing else is
 * painted, so a pixel is non-transparent exactly where some layer's mask is set. Later layers
 * cover earlier ones. layers: [{mask: RleMask, colour: [r, g, b], alpha}]
 */
export function paintMasks(context, width, height, layers) {
  const image = context.createImageData(width, height);
  const data = image.data;
  if (scratch.length < width * height) scratch = new Uint8Array(width * height);
  for (const { mask, colour, alpha } of layers) {
    if (mask.width !== width || mask.height !== height) {
      throw new Error(`mask is ${mask.width}x${mask.height}, the picture ${width}x${height}`);
    }
    const fill = Math.round(alpha * 255);
    const [r, g, b] = colour;
    // Pass 1: fill, and note the mask's pixels (row-major) for the outline test.
    visitPixels(mask, (offset) => {
      scratch[offset] = 1;
      const at = offset * 4;
      data[at] = r;
      data[at + 1] = g;
      data[at + 2] = b;
      data[at + 3] = fill;
    });
    // Pass 2: the outline, inside the mask.
    visitPixels(mask, (offset, x, y) => {
      const edge =
        x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !scratch[offset - 1] || !scratch[offset + 1] || !scratch[offset - width] || !scratch[offset + width];
      if (edge) data[offset * 4 + 3] = 255;
    });
    // Pass 3: clear the scratch for the next layer (only what was set).
    visitPixels(mask, (offset) => (scratch[offset] = 0));
  }
  context.putImageData(image, 0, 0);
}

function visitPixels(mask, visit) {
  const { height, width } = mask;
  mask.forEachRun((start, end) => {
    let x = Math.floor(start / height);
    let y = start - x * height;
    for (let index = start; index < end; index++) {
      visit(y * width + x, x, y);
      if (++y === height) {
        y = 0;
        x++;
      }
    }
  });
}

/**
 * Vector marks over the picture, in the canvas' own pixels (scale: canvas pixels per image pixel).
 * boxes: [{box: [x1, y1, x2, y2], colour, label, strong}]; prompts: {points: [[x, y, label]],
 * boxes: [[x1, y1, x2, y2, label]]}; draft: a box being dragged.
 */
export function drawMarks(context, scale, { boxes = [], prompts = { points: [], boxes: [] }, draft = null }) {
  const ratio = window.devicePixelRatio || 1;
  context.save();
  context.lineJoin = "round";
  context.font = `${Math.round(12 * ratio)}px system-ui, sans-serif`;
  context.textBaseline = "bottom";
  for (const { box, colour, label, strong } of boxes) {
    const [x1, y1, x2, y2] = box.map((value) => value * scale);
    context.lineWidth = (strong ? 3 : 1.5) * ratio;
    context.strokeStyle = cssColour(colour);
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (label) {
      const padding = 3 * ratio;
      const width = context.measureText(label).width + 2 * padding;
      const height = 16 * ratio;
      const top = y1 - height >= 0 ? y1 - height : y1;
      context.fillStyle = cssColour(colour, 0.85);
      context.fillRect(x1, top, width, height);
      context.fillStyle = "#fff";
      context.fillText(label, x1 + padding, top + height - 2 * ratio);
    }
  }
  for (const [x1, y1, x2, y2, label] of [...prompts.boxes, ...(draft ? [draft] : [])]) {
    context.setLineDash([6 * ratio, 4 * ratio]);
    context.lineWidth = 2 * ratio;
    context.strokeStyle = label ? "#22c55e" : "#ef4444";
    context.strokeRect(x1 * scale, y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale);
  }
  context.setLineDash([]);
  for (const [x, y, label] of prompts.points) {
    const radius = 6 * ratio;
    context.beginPath();
    context.arc(x * scale, y * scale, radius, 0, 2 * Math.PI);
    context.fillStyle = label ? "#22c55e" : "#ef4444";
    context.fill();
    context.lineWidth = 2 * ratio;
    context.strokeStyle = "#fff";
    context.stroke();
    context.beginPath(); // a plus or a minus inside
    context.moveTo(x * scale - radius / 2, y * scale);
    context.lineTo(x * scale + radius / 2, y * scale);
    if (label) {
      context.moveTo(x * scale, y * scale - radius / 2);
      context.lineTo(x * scale, y * scale + radius / 2);
    }
    context.stroke();
  }
  context.restore();
}
