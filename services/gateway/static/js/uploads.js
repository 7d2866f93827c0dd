// Uploads: the header's button and drops anywhere on the page, a small panel with progress, and failures that say
// why in plain words until they are dismissed.
import { accessToken, api, humanMessage, refresh } from "./api.js";
import { addUploaded } from "./gallery.js";
import { $, el, formatBytes } from "./ui.js";

const PARALLEL_UPLOADS = 3;
const DONE_VISIBLE_MS = 5000;
const queue = [];
let active = 0;
let limits = null;
let onUploaded = () => {};

export function wireUploads(uploaded) {
  onUploaded = uploaded;
  const input = $("file-input");
  $("upload-button").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  $("uploads-clear").addEventListener("click", () => {
    $("uploads").querySelectorAll(".upload.done, .upload.failed, .upload.warning").forEach((row) => row.remove());
    hidePanelIfEmpty();
  });
  wireDrops();
}

function wireDrops() {
  const overlay = $("drop-overlay");
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  window.addEventListener("dragenter", (event) => {
    if (!hasFiles(event) || $("library-view").hidden) return;
    depth += 1;
    overlay.hidden = false;
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) overlay.hidden = true;
  });
  // A file dropped anywhere must not make the browser leave the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    overlay.hidden = true;
    if (!$("library-view").hidden && event.dataTransfer?.files.length) addFiles([...event.dataTransfer.files]);
  });
}

export async function loadLimits() {
  try {
    limits = await (await api("/v1/limits")).json();
  } catch {
    limits = null;
  }
}

function refusal(file) {
  if (file.size === 0) return "This file is empty.";
  if (!limits) return "";
  if (file.size > limits.max_bytes) return `Too large: photos can be up to ${formatBytes(limits.max_bytes)}.`;
  if (file.type && !limits.content_types.includes(file.type)) {
    return "This kind of file can’t be uploaded. Use a JPEG, PNG, WebP, GIF or BMP photo.";
  }
  return "";
}

export function addFiles(files) {
  $("uploads-panel").hidden = false;
  for (const file of files) {
    const row = uploadRow(file);
    const problem = refusal(file);
    if (problem) finish(row, "failed", problem);
    else queue.push({ file, row });
  }
  pump();
}

function uploadRow(file) {
  const bar = el("progress", { max: 100, value: 0, "aria-label": `Upload of ${file.name}` });
  const dismiss = el("button", { type: "button", class: "dismiss", "aria-label": `Dismiss ${file.name}` }, "✕");
  const row = el(
    "li",
    { class: "upload" },
    el("span", { class: "upload-name", textContent: file.name, title: file.name }),
    bar,
    el("span", { class: "upload-state", textContent: "Waiting…" }),
    dismiss,
  );
  dismiss.addEventListener("click", () => {
    row.remove();
    hidePanelIfEmpty();
  });
  $("uploads").prepend(row);
  return row;
}

function hidePanelIfEmpty() {
  $("uploads-panel").hidden = !$("uploads").children.length;
}

function finish(row, outcome, text) {
  row.classList.add(outcome);
  row.querySelector("progress").value = outcome === "failed" ? 0 : 100;
  row.querySelector(".upload-state").textContent = text;
  if (outcome === "done") {
    setTimeout(() => {
      row.remove();
      hidePanelIfEmpty();
    }, DONE_VISIBLE_MS);
  }
}

function outcomeOf(image) {
  if (image.status === "failed") {
    return ["warning", "Uploaded, but it couldn’t be labelled: the file may be damaged or incomplete."];
  }
  if (image.status === "pending") return ["done", "Uploaded · labels follow in a moment"];
  return ["done", image.duplicate ? "Already in your library" : `Done · ${image.category}`];
}

function pump() {
  while (active < PARALLEL_UPLOADS && queue.length) {
    const { file, row } = queue.shift();
    active += 1;
    upload(file, row)
      .then((image) => {
        finish(row, ...outcomeOf(image));
        addUploaded(image);
        onUploaded(image);
      })
      .catch((err) => finish(row, "failed", err.message))
      .finally(() => {
        active -= 1;
        pump();
      });
  }
}

async function upload(file, row, retried = false) {
  if (!accessToken()) await refresh();
  const reply = await send(file, row, accessToken());
  if (reply.status === 401 && !retried) {
    await refresh();
    return upload(file, row, true);
  }
  if (reply.status !== 201) throw new Error(failureText(reply));
  return JSON.parse(reply.body);
}

function failureText(reply) {
  let message = "";
  try {
    message = JSON.parse(reply.body).error.message;
  } catch {
    // Not our JSON: the status decides the words.
  }
  if (reply.status === 413 && limits) return `Too large: photos can be up to ${formatBytes(limits.max_bytes)}.`;
  if (reply.status === 400 && /empty/i.test(message)) return "This file is empty.";
  if (reply.status === 400 && /pixels/i.test(message)) {
    const limit = limits ? ` (at most ${Math.round(limits.max_pixels / 1e6)} megapixels)` : "";
    return `This photo is too big to label${limit}. Save a smaller copy and upload that.`;
  }
  if (reply.status === 400) return "This file can’t be read as a photo. Use a JPEG, PNG, WebP, GIF or BMP image.";
  return humanMessage(reply.status, message, Number(reply.retryAfter) || 60);
}

// XMLHttpRequest, not fetch: only it reports upload progress.
function send(file, row, token) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    const bar = row.querySelector("progress");
    const state = row.querySelector(".upload-state");
    xhr.open("POST", "/v1/images");
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (event) => {
      if (!event.lengthComputable) return;
      bar.value = Math.round((event.loaded / event.total) * 100);
      state.textContent = bar.value < 100 ? `${bar.value}%` : "Labelling…";
    };
    xhr.onload = () =>
      resolve({ status: xhr.status, body: xhr.responseText, retryAfter: xhr.getResponseHeader("Retry-After") });
    xhr.onerror = () => resolve({ status: 0, body: "" });
    const form = new FormData();
    form.append("image", file, file.name);
    state.textContent = "0%";
    xhr.send(form);
  });
}
