// An image -> the 28x28 input the model expects, by the same steps as images.py's
// to_mnist_digit(), number for number: a test compares the two on hundreds of digits.
// MNIST digits are light ink on a dark field, cropped to the ink, the longer side
// scaled to 20 px, and placed with the ink's centre of mass at the centre of 28x28.
// The ink is found as a document scanner finds it: the paper's light (shadows too) is
// estimated and subtracted, grain is smoothed away before deciding what is ink (Otsu's
// threshold, with hysteresis), specks are dropped, and a fine pen's or a heavy marker's
// stroke is brought to MNIST's width.

export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;
const MNIST_CENTRE = 13.5; // the centre of the 28x28 field, in pixel indices
const INK_THRESHOLD = 0.2; // ink scaled to [0, 1]: the crop holds every pixel above this
const MIN_CONTRAST = 0.1; // ink must differ from the paper by 10% of the full range
const WORK_SIZE = 256; // px, the longer side: larger images are shrunk first
const PAPER_SIZE = 64; // px, the longer side of the copy on which the paper's light is estimated
const PAPER_WINDOW = 0.4; // the opening's window, a fraction of the longer side
const SPECK = 0.05; // a piece of ink smaller than this fraction of the largest piece is a speck
const FAINT_INK = 2 / 3; // of the threshold: fainter ink is kept where it joins clear ink
const NEAR_INK = 2; // px around the ink pieces whose grey values are kept
const INK_LEVEL = 0.95; // the quantile of the clear ink (above Otsu's threshold) taken as full ink
const STROKE_WIDTH = 2.5; // at the 20-px scale: a stroke under half of it is grown to it
const HEAVY_STROKE = 3.0; // at the 20-px scale: a heavier stroke is thinned to it

export class NoInkError extends Error {}

// RGBA bytes (already composited on white) -> gray in [0, 1], as Pillow's convert("L").
export function grayscale({ data, width, height }) {
  const gray = new Float64Array(width * height);
  for (let i = 0; i < gray.length; i++) {
    const [r, g, b] = [data[4 * i], data[4 * i + 1], data[4 * i + 2]];
    gray[i] = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16) / 255;
  }
  return { pixels: gray, width, height };
}

// Python's round(): halves go to the even neighbour.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
}

function median(values) {
  const sorted = Float64Array.from(values).sort();
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

// Pillow's bilinear resampling weights (Resample.c, precompute_coeffs): when shrinking,
// the triangle filter widens with the scale, so every source pixel counts (antialiasing).
function resampleWeights(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const rows = [];
  for (let out = 0; out < outSize; out++) {
    const centre = (out + 0.5) * scale;
    const first = Math.max(0, Math.trunc(centre - support + 0.5));
    const last = Math.min(inSize, Math.trunc(centre + support + 0.5));
    const weights = [];
    let total = 0;
    for (let x = first; x < last; x++) {
      const w = Math.max(0, 1 - Math.abs((x - centre + 0.5) * (1 / filterScale))); // as Pillow
      weights.push(w);
      total += w;
    }
    rows.push({ first, weights: total ? weights.map((w) => w / total) : weights });
  }
  return rows;
}

// Pillow's Image.resize(BILINEAR) of a float32 ("F") image: rows first, then columns,
// sums in double precision, every pass stored as float32.
function resizeBilinear(src, width, height, outWidth, outHeight) {
  let pixels = src;
  let w = width;
  if (outWidth !== width) {
    const tmp = new Float32Array(outWidth * height);
    const columns = resampleWeights(width, outWidth);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < outWidth; x++) {
        const { first, weights } = columns[x];
        let sum = 0;
        for (let i = 0; i < weights.length; i++) sum += pixels[y * w + first + i] * weights[i];
        tmp[y * outWidth + x] = sum;
      }
    }
    pixels = tmp;
    w = outWidth;
  }
  if (outHeight !== height) {
    const tmp = new Float32Array(w * outHeight);
    const rows = resampleWeights(height, outHeight);
    rows.forEach(({ first, weights }, y) => {
      for (let x = 0; x < w; x++) {
        let sum = 0;
        for (let i = 0; i < weights.length; i++) sum += pixels[(first + i) * w + x] * weights[i];
        tmp[y * w + x] = sum;
      }
    });
    pixels = tmp;
  }
  return Float32Array.from(pixels);
}

// Paste the digit into 28x28 so that its centre of mass lands at MNIST's.
function placeByCentreOfMass(digit, width, height) {
  const rowMass = new Float64Array(height);
  const colMass = new Float64Array(width);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      rowMass[y] += digit[y * width + x];
      colMass[x] += digit[y * width + x];
    }
  }
  const offset = (mass) => {
    let moment = 0;
    let total = 0;
    mass.forEach((m, i) => { moment += Math.fround(m) * i; total += Math.fround(m); });
    const shift = roundHalfEven(MNIST_CENTRE - moment / Math.fround(total));
    return Math.min(Math.max(shift, 0), 28 - mass.length);
  };
  const [top, left] = [offset(rowMass), offset(colMass)];
  const canvas = new Float32Array(28 * 28);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) canvas[(top + y) * 28 + left + x] = digit[y * width + x];
  }
  return canvas;
}

function border(pixels, width, height) {
  const edge = [];
  for (let x = 0; x < width; x++) edge.push(pixels[x], pixels[(height - 1) * width + x]);
  for (let y = 0; y < height; y++) edge.push(pixels[y * width], pixels[y * width + width - 1]);
  return edge;
}

// The image with its longer side at most SIZE px (Pillow's antialiased bilinear).
function shrink(image, size) {
  const scale = size / Math.max(image.width, image.height);
  if (scale >= 1) return image;
  const width = Math.max(1, roundHalfEven(image.width * scale));
  const height = Math.max(1, roundHalfEven(image.height * scale));
  const pixels = resizeBilinear(Float32Array.from(image.pixels), image.width, image.height, width, height);
  return { pixels: Float64Array.from(pixels), width, height };
}

// REDUCE (Math.min, Math.max) over SIZE x SIZE windows, down the columns, then along the
// rows; windows are cut at the edges (as repeating the edge outward does).
function slide({ pixels, width, height }, size, reduce) {
  const r = Math.floor(size / 2);
  const most = reduce === Math.max;
  const pick = (a, b) => (most ? (b > a ? b : a) : (b < a ? b : a));
  const columns = new Float64Array(pixels.length);
  for (let y = 0; y < height; y++) {
    const first = Math.max(0, y - r);
    const last = Math.min(height - 1, y + r);
    for (let x = 0; x < width; x++) {
      let value = pixels[first * width + x];
      for (let j = first + 1; j <= last; j++) value = pick(value, pixels[j * width + x]);
      columns[y * width + x] = value;
    }
  }
  const out = new Float64Array(pixels.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const first = Math.max(0, x - r);
      const last = Math.min(width - 1, x + r);
      let value = columns[y * width + first];
      for (let j = first + 1; j <= last; j++) value = pick(value, columns[y * width + j]);
      out[y * width + x] = value;
    }
  }
  return { pixels: out, width, height };
}

// A [1, 2, 1] / 4 blur down the columns, then along the rows; edges repeated.
function smooth({ pixels, width, height }) {
  const down = new Float64Array(pixels.length);
  const out = new Float64Array(pixels.length);
  for (let y = 0; y < height; y++) {
    const [above, below] = [Math.max(0, y - 1), Math.min(height - 1, y + 1)];
    for (let x = 0; x < width; x++) {
      down[y * width + x] = (pixels[above * width + x] + 2 * pixels[y * width + x] + pixels[below * width + x]) / 4;
    }
  }
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [left, right] = [Math.max(0, x - 1), Math.min(width - 1, x + 1)];
      out[y * width + x] = (down[y * width + left] + 2 * down[y * width + x] + down[y * width + right]) / 4;
    }
  }
  return out;
}

// The paper's light under light ink: a grey-level opening, on a copy at most PAPER_SIZE px.
function paper(image) {
  const small = shrink(image, PAPER_SIZE);
  const window = 2 * roundHalfEven(PAPER_WINDOW * Math.max(small.width, small.height) / 2) + 1;
  const light = slide(slide(small, window, Math.min), window, Math.max);
  if (small.width === image.width && small.height === image.height) return light.pixels;
  return resizeBilinear(Float32Array.from(light.pixels), small.width, small.height, image.width, image.height);
}

// The level (0-255) that best splits LEVELS into paper (at or below it) and ink (Otsu, 1979).
function otsuThreshold(levels) {
  const counts = new Array(256).fill(0);
  for (const level of levels) counts[level]++;
  let [total, mass] = [0, 0];
  counts.forEach((count, level) => { total += count; mass += count * level; });
  let [below, massBelow, best, threshold] = [0, 0, -1, 0];
  for (let level = 0; level < 255; level++) {
    below += counts[level];
    massBelow += counts[level] * level;
    const split = below * (total - below);
    const spread = mass * below - massBelow * total;
    const between = split > 0 ? (spread * spread) / split : 0;
    if (between > best) [best, threshold] = [between, level];
  }
  return threshold;
}

// The 8-connected pieces of LEVELS above FAINT_INK * THRESHOLD that reach above it (hysteresis:
// faint ink joined to clear ink is ink, faint grain alone is not), less specks: pieces smaller
// than SPECK times the largest. 1 on the pieces, 0 elsewhere.
function inkPieces(levels, threshold, width, height) {
  const low = Math.trunc(threshold * FAINT_INK);
  const labels = new Int32Array(levels.length);
  const stack = new Int32Array(levels.length);
  const [sizes, clear] = [[0], [false]];
  for (let start = 0; start < levels.length; start++) {
    if (levels[start] <= low || labels[start]) continue;
    const label = sizes.length;
    labels[start] = label;
    stack[0] = start;
    let [top, size, reaches] = [1, 0, false];
    while (top) {
      const i = stack[--top];
      size++;
      reaches ||= levels[i] > threshold;
      const y = Math.floor(i / width);
      const x = i - y * width;
      for (let yy = Math.max(0, y - 1); yy <= Math.min(height - 1, y + 1); yy++) {
        for (let xx = Math.max(0, x - 1); xx <= Math.min(width - 1, x + 1); xx++) {
          const j = yy * width + xx;
          if (levels[j] > low && !labels[j]) {
            labels[j] = label;
            stack[top++] = j;
          }
        }
      }
    }
    sizes.push(size);
    clear.push(reaches);
  }
  const largest = sizes.reduce((most, size, label) => (clear[label] ? Math.max(most, size) : most), 0);
  return labels.map((label) => (clear[label] && sizes[label] >= SPECK * largest ? 1 : 0));
}

// Mean stroke width of MASK in px: 2 * area / perimeter (pixel edges between ink and not).
function strokeWidth(mask, width, height) {
  const at = (x, y) => (x >= 0 && x < width && y >= 0 && y < height ? mask[y * width + x] : 0);
  let [area, perimeter] = [0, 0];
  for (let y = -1; y < height; y++) {
    for (let x = -1; x < width; x++) {
      area += at(x, y);
      perimeter += Math.abs(at(x, y + 1) - at(x, y)) + Math.abs(at(x + 1, y) - at(x, y));
    }
  }
  return perimeter ? (2 * area) / perimeter : 0;
}

// The cropped ink with a fine pen's stroke grown to STROKE_WIDTH at the 20-px scale, a heavy
// marker's thinned to HEAVY_STROKE (grey-level dilation or erosion); others as they are.
function normalStroke(ink, clear) {
  const { width, height } = ink;
  const scale = Math.max(width, height) / 20;
  const stroke = strokeWidth(clear.pixels, width, height);
  if (stroke > 0 && stroke < (STROKE_WIDTH * scale) / 2) {
    const steps = roundHalfEven((STROKE_WIDTH * scale - stroke) / 2);
    const padded = { pixels: new Float64Array((width + 2 * steps) * (height + 2 * steps)),
      width: width + 2 * steps, height: height + 2 * steps };
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) padded.pixels[(y + steps) * padded.width + x + steps] = ink.pixels[y * width + x];
    }
    return slide(padded, 2 * steps + 1, Math.max);
  }
  const steps = roundHalfEven((stroke - HEAVY_STROKE * scale) / 2);
  if (steps > 0) {
    const thinned = slide(ink, 2 * steps + 1, Math.min);
    return thinned.pixels.some((v) => v > INK_THRESHOLD) ? thinned : ink;
  }
  return ink;
}

// Cropped ink in [0, 1] -> 28x28: the longer side scaled to 20 px, placed by its centre of mass.
function fitInField({ pixels, width, height }) {
  const scale = 20 / Math.max(width, height);
  const outWidth = Math.max(1, roundHalfEven(width * scale));
  const outHeight = Math.max(1, roundHalfEven(height * scale));
  const digit = resizeBilinear(Float32Array.from(pixels), width, height, outWidth, outHeight);
  // Shrinking greys out thin strokes; MNIST strokes peak at full white, so stretch back.
  let peak = 0;
  for (const v of digit) peak = Math.max(peak, v);
  const stretched = digit.map((v) => Math.min(Math.max(Math.fround(v / peak), 0), 1));
  return placeByCentreOfMass(stretched, outWidth, outHeight);
}

function crop(pixels, width, [top, bottom, left, right]) {
  const [cropWidth, cropHeight] = [right - left + 1, bottom - top + 1];
  const out = new Float64Array(cropWidth * cropHeight);
  for (let y = 0; y < cropHeight; y++) {
    for (let x = 0; x < cropWidth; x++) out[y * cropWidth + x] = pixels[(top + y) * width + left + x];
  }
  return { pixels: out, width: cropWidth, height: cropHeight };
}

// Gray [0, 1] image of any size -> 28x28 Float32Array in [0, 1], MNIST's layout.
// Throws NoInkError for a blank image.
export function toMnistDigit(image) {
  const work = shrink(image, WORK_SIZE);
  const { width, height } = work;
  let gray = work.pixels;
  if (median(border(gray, width, height)) > 0.5) gray = gray.map((v) => 1 - v); // dark ink on light paper
  const light = paper({ pixels: gray, width, height });
  let ink = gray.map((v, i) => v - light[i]);
  const offset = median(border(ink, width, height));
  ink = ink.map((v) => v - offset);
  const levels = smooth({ pixels: ink, width, height })
    .map((v) => Math.min(Math.floor(Math.min(Math.max(v, 0), 1) * 256), 255));
  if (levels.reduce((a, b) => Math.max(a, b), 0) < MIN_CONTRAST * 256) {
    throw new NoInkError("no ink found (blank image)");
  }
  const threshold = otsuThreshold(levels);
  const pieces = inkPieces(levels, threshold, width, height);
  const clear = pieces.map((piece, i) => (piece && levels[i] > threshold ? 1 : 0));
  const full = ink.filter((v, i) => clear[i]).sort(); // a new array: sorting leaves ink as it is
  const fullInk = full[Math.trunc(INK_LEVEL * (full.length - 1))];
  if (fullInk <= 0) throw new NoInkError("no ink found (blank image)"); // noise, not a digit
  const near = slide({ pixels: Float64Array.from(pieces), width, height }, 2 * NEAR_INK + 1, Math.max).pixels;
  ink = ink.map((v, i) => Math.min(Math.max(v / fullInk, 0), 1) * near[i]);
  let [top, bottom, left, right] = [height, -1, width, -1];
  ink.forEach((v, i) => {
    if (v <= INK_THRESHOLD) return;
    const [y, x] = [Math.floor(i / width), i % width];
    [top, bottom] = [Math.min(top, y), Math.max(bottom, y)];
    [left, right] = [Math.min(left, x), Math.max(right, x)];
  });
  const box = [top, bottom, left, right];
  return fitInField(normalStroke(crop(ink, width, box), crop(clear, width, box)));
}

// 28x28 [0, 1] -> the network's input: normalized as in training.
export function normalize(digit) {
  return digit.map((v) => (v - MNIST_MEAN) / MNIST_STD);
}
