// ganomaly web page: pick or drop an image, POST it to /v1/score, show the verdict.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { threshold: null, keyNeeded: false };

function apiKey() {
  return $("api-key").value || sessionStorage.getItem("ganomaly-api-key") || "";
}

function headers() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function fmt(value, digits) {
  return Number(value).toFixed(digits);
}

function fmtSig(value) {
  return Number(value).toPrecision(5);
}

async function loadModel() {
  const response = await fetch("/v1/model", { headers: headers() });
  if (response.status === 401) {
    state.keyNeeded = true;
    $("key-row").hidden = false;
    $("model-line").textContent = "this server needs an API key";
    return;
  }
  if (!response.ok) {
    $("model-line").textContent = "model card unavailable";
    return;
  }
  const card = await response.json();
  state.threshold = card.threshold;
  const [h, w] = card.image_size;
  const cls = card.target_class === null || card.target_class === undefined ? "" : ` class ${card.target_class}`;
  $("model-line").textContent =
    `${card.name} · ${card.data || "custom data"}${cls} (${card.protocol || "?"}) · ${h}×${w}, ${card.channels} channel${card.channels > 1 ? "s" : ""}`;
  const metrics = card.metrics || {};
  const rows = [
    ["threshold (raw)", fmtSig(card.threshold)],
    ["threshold rule", card.threshold_quantile ? `q${card.threshold_quantile} of ${card.n_val} val. normals` : "fixed"],
    ["score metric", card.score_metric],
    ["epochs", card.epochs],
    ["test AUROC", metrics.auroc !== undefined && metrics.auroc !== null ? fmt(metrics.auroc, 3) : "–"],
    ["test AUPR", metrics.aupr !== undefined && metrics.aupr !== null ? fmt(metrics.aupr, 3) : "–"],
    ["test F1 @ threshold", metrics.f1 !== undefined && metrics.f1 !== null ? fmt(metrics.f1, 3) : "–"],
  ];
  const dl = $("card");
  dl.replaceChildren();
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    dl.append(dt, dd);
  }
  $("vmax").textContent = String(card.map_vmax);
}

function addHistory(result) {
  const row = document.createElement("tr");
  const cells = [result.filename, fmt(result.normalized_score, 3), fmtSig(result.score),
    result.is_anomaly ? "ANOMALY" : "normal"];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (i === 3) td.className = result.is_anomaly ? "bad" : "ok";
    row.append(td);
  });
  $("history").tBodies[0].prepend(row);
  $("history-panel").hidden = false;
}

function showResult(result, threshold) {
  $("result").hidden = false;
  const verdict = $("verdict");
  verdict.textContent = result.is_anomaly ? "ANOMALY" : "NORMAL";
  verdict.className = "verdict " + (result.is_anomaly ? "anomaly" : "normal");
  verdict.dataset.isAnomaly = String(result.is_anomaly);
  $("filename").textContent = result.filename;
  const normalized = $("normalized-score");
  normalized.textContent = fmt(result.normalized_score, 3);
  normalized.dataset.value = String(result.normalized_score);
  $("raw-score").textContent = fmtSig(result.score);
  $("raw-score").dataset.value = String(result.score);
  $("threshold").textContent = fmtSig(threshold);
  // Gauge: 0..2 in normalized units, the threshold (1) in the middle.
  const fill = $("gauge-fill");
  fill.style.width = `${Math.max(0, Math.min(1, result.normalized_score / 2)) * 100}%`;
  fill.classList.toggle("anomaly", result.is_anomaly);
  $("img-input").src = result.input_png;
  $("img-recon").src = result.reconstruction_png;
  $("img-map").src = result.anomaly_map_png;
  addHistory(result);
}

async function scoreFile(file) {
  if (!file) return;
  $("img-original").src = URL.createObjectURL(file);
  setStatus(`scoring ${file.name}…`);
  document.body.dataset.state = "busy";
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const response = await fetch("/v1/score?anomaly_map=true&reconstruction=true", {
      method: "POST", headers: headers(), body,
    });
    const payload = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) {
      if (response.status === 401) $("key-row").hidden = false;
      setStatus(`${file.name}: ${payload.detail || "HTTP " + response.status}`, true);
      document.body.dataset.state = "error";
      return;
    }
    showResult(payload.results[0], payload.threshold);
    setStatus(`scored ${file.name}`);
    document.body.dataset.state = "done";
  } catch (error) {
    setStatus(`could not reach the server: ${error}`, true);
    document.body.dataset.state = "error";
  }
}

function setup() {
  const drop = $("drop");
  const input = $("file-input");
  input.addEventListener("change", () => {
    const file = input.files[0];
    input.value = "";  // choosing the same file again must score it again
    scoreFile(file);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") input.click();
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => scoreFile(event.dataTransfer.files[0]));
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("ganomaly-api-key", $("api-key").value);
    loadModel();
  });
  loadModel();
}

setup();
