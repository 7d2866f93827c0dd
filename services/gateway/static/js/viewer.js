// The photo viewer: the original scaled to the screen, next and previous by arrow keys, buttons or swipe, Escape to
// close; labels with scores, tags to add and remove, dates and size; download and delete.
import { api } from "./api.js";
import { describe, downloadImages, library, orderedUids, removeImages, thumbnailUrl, updateTile } from "./gallery.js";
import { $, el, formatBytes, formatDateTime, sentence } from "./ui.js";

const SWIPE_PX = 50;
let current = "";
let originalUrl = "";
let opener = null;
let loadToken = 0;
// Content types this browser could not decode (HEIC outside Safari): their photos are shown from a display copy made
// by the server, without downloading an original the browser cannot show. Every browser decodes the web's own types,
// so one of those failing is that file's fault, not its type's.
const undecodable = new Set();
const WEB_TYPES = new Set(["image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"]);

export function wireViewer() {
  const dialog = $("viewer");
  $("viewer-close").addEventListener("click", close);
  $("viewer-prev").addEventListener("click", () => step(-1));
  $("viewer-next").addEventListener("click", () => step(1));
  $("viewer-download").addEventListener("click", () => downloadImages([current]));
  $("viewer-delete").addEventListener("click", remove);
  $("tag-form").addEventListener("submit", addTag);
  dialog.addEventListener("close", cleanUp);
  $("viewer-image").addEventListener("load", drawFaces);
  new ResizeObserver(drawFaces).observe($("viewer-stage"));
  dialog.addEventListener("keydown", onKey);
  wireSwipe($("viewer-stage"));
}

export function openViewer(uid) {
  const dialog = $("viewer");
  opener = document.activeElement;
  show(uid);
  if (!dialog.open) dialog.showModal();
  $("viewer-close").focus();
}

function close() {
  $("viewer").close();
}

function cleanUp() {
  if (originalUrl) URL.revokeObjectURL(originalUrl);
  originalUrl = "";
  $("viewer-image").removeAttribute("src");
  const tile = current && document.querySelector(`.tile-item[data-uid="${CSS.escape(current)}"] .tile`);
  (tile || opener)?.focus();
  current = "";
  searchThreshold = null; // asked again next time: the settings may change, or another person sign in
}

function onKey(event) {
  if (event.target.closest("input, textarea")) return;
  if (event.key === "ArrowLeft") step(-1);
  else if (event.key === "ArrowRight") step(1);
  else if (event.key === "Delete") remove();
  else return;
  event.preventDefault();
}

function wireSwipe(stage) {
  let startX = null;
  let startY = 0;
  stage.addEventListener("pointerdown", (event) => {
    startX = event.clientX;
    startY = event.clientY;
  });
  stage.addEventListener("pointerup", (event) => {
    if (startX === null) return;
    const dx = event.clientX - startX;
    const dy = event.clientY - startY;
    startX = null;
    if (Math.abs(dx) > SWIPE_PX && Math.abs(dx) > Math.abs(dy)) step(dx < 0 ? 1 : -1);
  });
  stage.addEventListener("pointercancel", () => {
    startX = null;
  });
}

function neighbours() {
  const order = orderedUids();
  const index = order.indexOf(current);
  return { order, index };
}

function step(delta) {
  const { order, index } = neighbours();
  const target = order[index + delta];
  if (target) show(target);
}

function show(uid) {
  current = uid;
  const image = library.images.get(uid);
  const { order, index } = neighbours();
  $("viewer-prev").hidden = index <= 0;
  $("viewer-next").hidden = index < 0 || index >= order.length - 1;
  fill(image);
  loadPicture(image);
}

async function loadPicture(image) {
  const token = ++loadToken;
  const picture = $("viewer-image");
  picture.alt = `${describe(image)}: ${image.filename}`;
  picture.removeAttribute("src");
  $("viewer-faces").replaceChildren();
  thumbnailUrl(image.uid)
    .then((url) => {
      if (token === loadToken && !picture.dataset.original) picture.src = url;
    })
    .catch(() => {});
  picture.dataset.original = "";
  const uid = encodeURIComponent(image.uid);
  try {
    let url = undecodable.has(image.content_type) ? "" : await showableOriginal(uid);
    if (!url) {
      if (!WEB_TYPES.has(image.content_type)) undecodable.add(image.content_type);
      url = URL.createObjectURL(await (await api(`/v1/images/${uid}/thumbnail?size=display`)).blob());
      const kind = image.content_type.replace("image/", "").toUpperCase();
      const why = `This browser cannot show ${kind} photos, so a converted copy (up to 1600 pixels) is shown.`;
      if (token === loadToken) note(`${why} Download gives the original.`);
    }
    if (token !== loadToken) {
      URL.revokeObjectURL(url);
      return;
    }
    if (originalUrl) URL.revokeObjectURL(originalUrl);
    originalUrl = url;
    picture.dataset.original = "1";
    picture.src = url;
  } catch (err) {
    if (token === loadToken) note(err.message);
  }
}

// The original as an object URL, or "" when this browser cannot decode it.
async function showableOriginal(uid) {
  const url = URL.createObjectURL(await (await api(`/v1/images/${uid}/content`)).blob());
  if (await canShow(url)) return url;
  URL.revokeObjectURL(url);
  return "";
}

async function canShow(url) {
  const probe = new Image();
  probe.src = url;
  try {
    await probe.decode();
    return true;
  } catch {
    return false;
  }
}

function note(text) {
  $("viewer-note").textContent = text;
  $("viewer-note").hidden = !text;
}

function fill(image) {
  $("viewer-title").textContent = describe(image);
  $("viewer-file").textContent = image.filename;
  note(statusNote(image));
  fillLabels(image);
  fillTags(image);
  fillDetails(image);
  fillSimilar(image);
  $("tag-error").textContent = "";
}

function drawFaces() {
  // The photo is scaled to fit the stage (object-fit: contain); boxes are fractions of the upright photo.
  const layer = $("viewer-faces");
  const picture = $("viewer-image");
  const image = library.images.get(current);
  layer.replaceChildren();
  if (!image?.faces?.length || !picture.naturalWidth || !picture.getAttribute("src")) return;
  const stage = $("viewer-stage");
  const scale = Math.min(stage.clientWidth / picture.naturalWidth, stage.clientHeight / picture.naturalHeight);
  const width = picture.naturalWidth * scale;
  const height = picture.naturalHeight * scale;
  const left = (stage.clientWidth - width) / 2;
  const top = (stage.clientHeight - height) / 2;
  for (const face of image.faces) {
    const box = el("div", { class: "face-box" });
    Object.assign(box.style, {
      left: `${left + face.box.x * width}px`,
      top: `${top + face.box.y * height}px`,
      width: `${face.box.width * width}px`,
      height: `${face.box.height * height}px`,
    });
    layer.append(box);
  }
}

const SIMILAR_SHOWN = 6;
// Below this the nearest photos of a small library are merely the least different (unrelated photos measured up to
// 0.51, re-taken shots from 0.77): the viewer shows only photos that really look alike.
const SIMILAR_MIN = 0.6;

async function fillSimilar(image) {
  // Photos of yours that look alike (the API never compares across users); quietly absent until analysed.
  const list = $("viewer-similar");
  list.replaceChildren();
  $("similar-heading").hidden = true;
  let found = [];
  try {
    const reply = await api(`/v1/images/${encodeURIComponent(image.uid)}/similar?page_size=${SIMILAR_SHOWN}`);
    found = (await reply.json()).images.filter((image) => image.similarity >= SIMILAR_MIN);
  } catch {
    return;
  }
  if (current !== image.uid || !found.length) return;
  $("similar-heading").hidden = false;
  list.replaceChildren(...found.map(similarItem));
}

function similarItem(found) {
  const picture = el("img", { alt: `${describe(found)}, ${Math.round(found.similarity * 100)}% alike` });
  thumbnailUrl(found.uid).then((url) => { picture.src = url; }).catch(() => {});
  const open = el("button", { type: "button", title: found.filename }, picture);
  open.addEventListener("click", () => {
    if (!library.images.has(found.uid)) library.images.set(found.uid, found);
    show(found.uid);
  });
  return el("li", {}, open);
}

function statusNote(image) {
  if (image.status === "pending") return "This photo is still being labelled. Its labels appear in a moment.";
  if (image.status === "failed") {
    return "This photo could not be labelled: the file may be damaged or incomplete. You can still add tags yourself.";
  }
  return "";
}

// The user's search threshold (GET /v1/me/settings), fetched once per opening: labels below it find nothing, so the viewer
// lists them apart as guesses instead of beside the labels that search uses.
let searchThreshold = null;
function threshold() {
  searchThreshold ??= api("/v1/me/settings")
    .then((reply) => reply.json())
    .then((settings) => settings.min_score)
    .catch(() => 0);
  return searchThreshold;
}

async function fillLabels(image) {
  const list = $("viewer-labels");
  const guesses = $("viewer-guesses");
  list.replaceChildren();
  guesses.hidden = true;
  if (!image.labels.length) {
    list.append(el("li", { class: "muted" }, "No labels yet."));
    return;
  }
  const minScore = await threshold();
  if (current !== image.uid) return;
  const top = image.labels.slice(0, 5);
  const sure = top.filter((label) => label.score >= minScore);
  const unsure = top.filter((label) => label.score < minScore);
  list.replaceChildren(...sure.map(labelItem));
  if (!sure.length) list.append(el("li", { class: "muted" }, "Not sure what this shows."));
  $("viewer-guesses-list").replaceChildren(...unsure.map(labelItem));
  $("viewer-guesses-count").textContent = unsure.length;
  guesses.hidden = !unsure.length;
}

function labelItem(label) {
  const percent = Math.round(label.score * 100);
  const bar = el("span", { class: "bar", "aria-hidden": "true" }, el("span"));
  bar.firstChild.style.width = `${Math.max(2, percent)}%`;
  return el(
    "li",
    {},
    el("span", { class: "label-name", textContent: label.label }),
    el("span", { class: "score", textContent: percent < 1 ? "under 1%" : `${percent}%` }),
    bar,
  );
}

function fillTags(image) {
  // Your own tags can be removed; the labeller's are shown for searching, and change when it relabels.
  const items = image.tags.map((tag) => {
    if (!image.manual_tags.includes(tag)) return el("li", { class: "tag" }, el("span", { textContent: tag }));
    const remove = el("button", { type: "button", class: "tag-remove", "aria-label": `Remove tag ${tag}` }, "✕");
    remove.addEventListener("click", () => changeTags(image, { remove: tag }));
    return el("li", { class: "tag own" }, el("span", { textContent: tag }), remove);
  });
  $("viewer-tags").replaceChildren(...items);
  if (!items.length) $("viewer-tags").append(el("li", { class: "muted" }, "No tags yet."));
}

function fillDetails(image) {
  const rows = [];
  if (image.taken_at) rows.push(["Taken", formatDateTime(new Date(image.taken_at))]);
  if (image.created_at) rows.push(["Uploaded", formatDateTime(new Date(image.created_at))]);
  rows.push(["Size", `${image.width} × ${image.height} pixels · ${formatBytes(image.size)}`]);
  if (image.faces_analysed) {
    const count = image.faces.length;
    rows.push(["Faces", count ? `${count} (outlined on the photo)` : "none found"]);
  }
  rows.push(["Type", image.content_type.replace("image/", "").toUpperCase()]);
  $("viewer-details").replaceChildren(...rows.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

function addTag(event) {
  event.preventDefault();
  const input = $("tag-input");
  const tag = input.value.trim().toLowerCase();
  if (!tag) return;
  const image = library.images.get(current);
  changeTags(image, { add: tag }).then((ok) => {
    if (ok) input.value = "";
  });
}

/** Your tags are replaced as a whole (PUT), so an edit sends the full list. */
async function changeTags(image, { add, remove }) {
  let manual = [...image.manual_tags];
  if (add && !manual.includes(add)) manual.push(add);
  if (remove) manual = manual.filter((tag) => tag !== remove);
  try {
    const reply = await api(`/v1/images/${encodeURIComponent(image.uid)}/tags`, { method: "PUT", json: { tags: manual } });
    const updated = await reply.json();
    updateTile(updated);
    if (updated.uid === current) fill(updated);
    return true;
  } catch (err) {
    $("tag-error").textContent = sentence(err.message);
    return false;
  }
}

async function remove() {
  const uid = current;
  const { order, index } = neighbours();
  const next = order[index + 1] || order[index - 1];
  const gone = await removeImages([uid]);
  if (!gone.length) return;
  if (next && library.images.has(next)) show(next);
  else close();
}
