// COCO RLE masks as the server sends them: {"size": [h, w], "counts": "<compressed string>"}.
//
// The image API, the session websocket and the stored frames all carry this format, so one small
// decoder serves every view. Runs alternate 0s and 1s (starting with 0s) over the mask in
// column-major order. The string is pycocotools' compression: each count is written as the
// difference to the count two places back (from the third on), in little-endian 5-bit groups offset
// by 48, bit 0x20 meaning "more groups follow" and bit 0x10 of the last group the sign.

/** The run lengths of a compressed counts string. */
export function decodeCounts(text) {
  const counts = new Uint32Array(text.length); // every count takes at least one character
  let length = 0;
  for (let position = 0; position < text.length; ) {
    let value = 0;
    let scale = 1; // 32 ** group, in doubles: JavaScript's bit shifts stop at 32 bits
    let group;
    do {
      group = text.charCodeAt(position++) - 48;
      if (group < 0 || group > 63) throw new Error(`not a COCO RLE string (character ${position - 1})`);
      value += (group & 0x1f) * scale;
      scale *= 32;
    } while (group & 0x20 && position < text.length);
    if (group & 0x20) throw new Error("COCO RLE string ends inside a count");
    if (group & 0x10) value -= scale; // two's complement over the groups read
    if (length > 2) value += counts[length - 2];
    if (value < 0) throw new Error("COCO RLE string decodes to a negative run");
    counts[length++] = value;
  }
  return counts.subarray(0, length);
}

/** A mask kept as its runs: small, and enough to paint it, hit-test it and measure it. */
export class RleMask {
  constructor(rle) {
    [this.height, this.width] = rle.size;
    this.rle = rle;
    this._counts = null;
    this._starts = null;
  }

  get counts() {
    if (this._counts === null) {
      this._counts = typeof this.rle.counts === "string" ? decodeCounts(this.rle.counts) : Uint32Array.from(this.rle.counts);
      const total = this._counts.reduce((sum, run) => sum + run, 0);
      if (total !== this.height * this.width) {
        throw new Error(`RLE covers ${total} pixels, its size ${this.height}x${this.width} has ${this.height * this.width}`);
      }
    }
    return this._counts;
  }

  /** Calls visit(start, end) for every run of 1s, as column-major pixel indices [start, end). */
  forEachRun(visit) {
    const counts = this.counts;
    let index = 0;
    for (let run = 0; run < counts.length; run++) {
      const next = index + counts[run];
      if (run & 1 && next > index) visit(index, next);
      index = next;
    }
  }

  get area() {
    let area = 0;
    this.forEachRun((start, end) => (area += end - start));
    return area;
  }

  /** Whether pixel (x, y) is set: a binary search over where the runs start. */
  contains(x, y) {
    x = Math.floor(x);
    y = Math.floor(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return false;
    if (this._starts === null) {
      const counts = this.counts;
      this._starts = new Float64Array(counts.length);
      for (let run = 0, index = 0; run < counts.length; index += counts[run], run++) this._starts[run] = index;
    }
    const target = x * this.height + y;
    let low = 0;
    let high = this._starts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this._starts[middle] <= target) low = middle;
      else high = middle - 1;
    }
    return (low & 1) === 1 && target < this._starts[low] + this.counts[low];
  }

  /** The mask as row-major bytes (1 set, 0 not), height * width of them. */
  toBytes() {
    const bytes = new Uint8Array(this.width * this.height);
    const height = this.height;
    const width = this.width;
    this.forEachRun((start, end) => {
      let x = Math.floor(start / height);
      let y = start - x * height;
      for (let index = start; index < end; index++) {
        bytes[y * width + x] = 1;
        if (++y === height) {
          y = 0;
          x++;
        }
      }
    });
    return bytes;
  }
}
