// The page: a drawing pad, ONNX Runtime Web (wasm, one thread) running model.onnx, and
// the result. window.classify(source) is the same path as drawing, for tests and consoles.
import { NoInkError, grayscale, normalize, toMnistDigit } from "./preprocess.js";

// Served from this folder (npm ci --prefix web): no request leaves the page's origin.
const ORT_DIR = "./node_modules/onnxruntime-web/dist/";
// On the 280-px pad a digit drawn about 200 px tall is scaled by 1/10 to MNIST's 20-px
// box, and MNIST's strokes are about 2 px wide there.
const STROKE_WIDTH = 20;
const PREDICT_EVERY_MS = 120; // while drawing; once more on release

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const padContext = pad.getContext("2d", { willReadFrequently: true });
const status = $("status");
window.timings = {}; // ms since navigation start (lastInference: ms), for measurements

let ort;
let session;
let queue = Promise.resolve(); // one inference at a time

async function loadModel() {
  try {
    ort = await import(`${ORT_DIR}ort.wasm.min.mjs`);
  } catch {
    throw new Error("ONNX Runtime Web is missing: run `npm ci --prefix web`, then reload.");
  }
  ort.env.wasm.numThreads = 1; // no SharedArrayBuffer: no cross-origin-isolation headers needed
  ort.env.wasm.wasmPaths = new URL(ORT_DIR, import.meta.url).href; // not relative to ORT itself
  session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
  await infer(new Float32Array(28 * 28)); // compiles the kernels, so the first digit is quick
}

async function infer(input) {
  const run = queue.then(async () => {
    const start = performance.now();
    const output = await session.run({ image: new ort.Tensor("float32", input, [1, 1, 28, 28]) });
    return { logProbs: output.log_probs.data, ms: performance.now() - start };
  });
  queue = run.catch(() => {});
  return run;
}

function whiteCanvas(width, height) {
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [width, height];
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  return { canvas, context };
}

async function loadImage(source) {
  if (source instanceof Blob) return createImageBitmap(source);
  const image = new Image();
  image.src = source;
  await image.decode();
  return image;
}

// An ImageData, a canvas, an image (URL, file, element or bitmap) -> RGBA pixels on white.
async function pixelsOf(source) {
  if (source instanceof ImageData) {
    const { data, width, height } = source;
    const out = new ImageData(width, height);
    for (let i = 0; i < data.length; i += 4) {
      const alpha = data[i + 3] / 255;
      for (let c = 0; c < 3; c++) out.data[i + c] = Math.round(data[i + c] * alpha + 255 * (1 - alpha));
      out.data[i + 3] = 255;
    }
    return out;
  }
  const image = typeof source === "string" || source instanceof Blob ? await loadImage(source) : source;
  const { context } = whiteCanvas(image.width, image.height);
  context.drawImage(image, 0, 0);
  return context.getImageData(0, 0, image.width, image.height);
}

async function classify(source) {
  if (!session) throw new Error("the model is not loaded yet");
  const digit = toMnistDigit(grayscale(await pixelsOf(source)));
  const { logProbs, ms } = await infer(normalize(digit));
  const probabilities = Array.from(logProbs, Math.exp);
  const best = probabilities.indexOf(Math.max(...probabilities));
  show(best, probabilities, digit, ms);
  return { digit: best, probabilities };
}
window.classify = classify;

function show(best, probabilities, digit, ms) {
  $("digit").textContent = best;
  $("bars").querySelectorAll("li").forEach((row, i) => {
    row.classList.toggle("top", i === best);
    row.querySelector(".fill").style.width = `${(100 * probabilities[i]).toFixed(1)}%`;
    row.querySelector(".value").textContent = `${(100 * probabilities[i]).toFixed(1)}%`;
  });
  const seen = new ImageData(28, 28);
  digit.forEach((v, i) => {
    seen.data.fill(Math.round(255 * v), 4 * i, 4 * i + 3);
    seen.data[4 * i + 3] = 255;
  });
  $("seen").getContext("2d").putImageData(seen, 0, 0);
  $("time").textContent = `inference ${ms.toFixed(1)} ms (wasm, 1 thread)`;
  window.timings.firstPrediction ??= performance.now();
  window.timings.lastInference = ms;
}

function showNothing() {
  $("digit").textContent = "–";
  $("bars").querySelectorAll(".fill").forEach((fill) => { fill.style.width = "0"; });
  $("bars").querySelectorAll(".value").forEach((value) => { value.textContent = ""; });
  $("seen").getContext("2d").clearRect(0, 0, 28, 28);
  $("time").textContent = "";
}

function setStatus(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// Only the answer is announced to a screen reader, and only when a stroke ends or an
// image is read: not the predictions made every 120 ms while drawing.
function announce(text) {
  $("answer").textContent = text;
}

async function classifyAndReport(source, final = true) {
  try {
    const { digit, probabilities } = await classify(source);
    setStatus("Draw another, or Clear.");
    if (final) announce(`Read as ${digit}, probability ${(100 * probabilities[digit]).toFixed(0)}%.`);
  } catch (error) {
    if (error instanceof NoInkError) {
      showNothing();
      setStatus("No ink found: draw a digit.");
      if (final) announce("No ink found.");
    } else {
      setStatus(`Could not read that image: ${error.message}`, true);
      if (final) announce("Could not read that image.");
    }
  }
}

// Drawing: dark strokes on a white pad, from a mouse, a finger or a pen.
let stroke = null; // the last point while a pointer is down
let lastPrediction = 0;

function clearPad() {
  padContext.fillStyle = "#fff";
  padContext.fillRect(0, 0, pad.width, pad.height);
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width),
          (event.clientY - box.top) * (pad.height / box.height)];
}

function drawTo(point) {
  padContext.beginPath();
  padContext.moveTo(...stroke);
  padContext.lineTo(...point);
  padContext.stroke();
  stroke = point;
}

pad.addEventListener("pointerdown", (event) => {
  if (!session) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  Object.assign(padContext, { lineWidth: STROKE_WIDTH, lineCap: "round", lineJoin: "round", strokeStyle: "#000" });
  stroke = padPoint(event);
  drawTo(stroke); // a dot for a tap
});

pad.addEventListener("pointermove", (event) => {
  if (!stroke) return;
  for (const e of event.getCoalescedEvents?.() ?? [event]) drawTo(padPoint(e));
  if (performance.now() - lastPrediction > PREDICT_EVERY_MS) {
    lastPrediction = performance.now();
    classifyAndReport(pad, false);
  }
});

for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!stroke) return;
    stroke = null;
    classifyAndReport(pad);
  });
}

$("clear").addEventListener("click", () => {
  clearPad();
  showNothing();
  setStatus("Draw a digit.");
  announce("");
});

// A chosen or dropped image: shown on the pad, classified at its own resolution.
async function classifyFile(file) {
  if (!file || !session) return;
  try {
    const image = await createImageBitmap(file);
    clearPad();
    const fit = Math.min(pad.width / image.width, pad.height / image.height);
    const [w, h] = [image.width * fit, image.height * fit];
    padContext.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    await classifyAndReport(image);
  } catch {
    setStatus(`${file.name}: not an image this browser can read.`, true);
    announce(`${file.name}: not an image this browser can read.`);
  }
}

$("file").addEventListener("change", (event) => classifyFile(event.target.files[0]));
pad.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("dragging"); });
pad.addEventListener("dragleave", () => pad.classList.remove("dragging"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dragging");
  classifyFile(event.dataTransfer.files[0]);
});

function buildBars() {
  $("bars").replaceChildren(...Array.from({ length: 10 }, (_, i) => {
    const row = document.createElement("li");
    row.innerHTML = `<span>${i}</span><span class="track"><span class="fill"></span></span><span class="value"></span>`;
    return row;
  }));
}

buildBars();
clearPad();
window.ready = loadModel().then(() => {
  window.timings.modelReady = performance.now();
  setStatus("Ready: draw a digit anywhere on the pad.");
}, (error) => {
  setStatus(error.message, true);
  throw error;
});
