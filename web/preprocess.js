// An image -> the 28x28 input the model expects, by the same steps as predict.py's
// to_mnist_digit(), number for number: a test compares the two on hundreds of digits.
// MNIST digits are light ink on a dark field, cropped to the ink, the longer side
// scaled to 20 px, and placed with the ink's centre of mass at the centre of 28x28.

export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;
const MNIST_CENTRE = 13.5; // the centre of the 28x28 field, in pixel indices
const INK_THRESHOLD = 0.2; // after stretching contrast to [0, 1]: fainter pixels are paper
const MIN_CONTRAST = 0.1; // ink must differ from the background by 10% of the full range

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
      const w = Math.max(0, 1 - Math.abs((x - centre + 0.5) / filterScale));
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
      columns.forEach(({ first, weights }, x) => {
        let sum = 0;
        weights.forEach((k, i) => { sum += pixels[y * w + first + i] * k; });
        tmp[y * outWidth + x] = sum;
      });
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
        weights.forEach((k, i) => { sum += pixels[(first + i) * w + x] * k; });
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

function border(gray, width, height) {
  const pixels = [];
  for (let x = 0; x < width; x++) pixels.push(gray[x], gray[(height - 1) * width + x]);
  for (let y = 0; y < height; y++) pixels.push(gray[y * width], gray[y * width + width - 1]);
  return pixels;
}

// Gray [0, 1] image of any size -> 28x28 Float32Array in [0, 1], MNIST's layout.
// Throws NoInkError for a blank image.
export function toMnistDigit({ pixels, width, height }) {
  let gray = pixels;
  if (median(border(gray, width, height)) > 0.5) { // dark ink on light paper: MNIST is the other way round
    gray = gray.map((v) => 1 - v);
  }
  const background = median(border(gray, width, height));
  let brightest = -Infinity;
  for (const v of gray) brightest = Math.max(brightest, v);
  if (brightest - background < MIN_CONTRAST) throw new NoInkError("no ink found (blank image)");
  const ink = gray.map((v) => Math.min(Math.max((v - background) / (brightest - background), 0), 1));
  let [top, bottom, left, right] = [height, -1, width, -1];
  ink.forEach((v, i) => {
    if (v <= INK_THRESHOLD) return;
    const [y, x] = [Math.floor(i / width), i % width];
    [top, bottom] = [Math.min(top, y), Math.max(bottom, y)];
    [left, right] = [Math.min(left, x), Math.max(right, x)];
  });
  const [cropWidth, cropHeight] = [right - left + 1, bottom - top + 1];
  const crop = new Float32Array(cropWidth * cropHeight);
  for (let y = 0; y < cropHeight; y++) {
    for (let x = 0; x < cropWidth; x++) crop[y * cropWidth + x] = ink[(top + y) * width + left + x];
  }
  const scale = 20 / Math.max(cropWidth, cropHeight);
  const outWidth = Math.max(1, roundHalfEven(cropWidth * scale));
  const outHeight = Math.max(1, roundHalfEven(cropHeight * scale));
  const digit = resizeBilinear(crop, cropWidth, cropHeight, outWidth, outHeight);
  // Shrinking greys out thin strokes; MNIST strokes peak at full white, so stretch back.
  let peak = 0;
  for (const v of digit) peak = Math.max(peak, v);
  const stretched = digit.map((v) => Math.min(Math.max(Math.fround(v / peak), 0), 1));
  return placeByCentreOfMass(stretched, outWidth, outHeight);
}

// 28x28 [0, 1] -> the network's input: normalized as in training.
export function normalize(digit) {
  return digit.map((v) => (v - MNIST_MEAN) / MNIST_STD);
}
