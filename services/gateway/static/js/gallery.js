// The gallery: uniform square tiles grouped by day, endless scrolling over the API's pages, and multi-select
// (click, shift-click, Ctrl/Cmd-click, Space, Shift+Space, Ctrl+A) with bulk download and delete.
import { api, getJson } from "./api.js";
import { $, dayKey, dayLabel, el, photoDate, toast } from "./ui.js";

const PAGE_SIZE = 30;
const POLL_MS = 2000;
const MAX_POLLS = 90;
const PARALLEL_DELETES = 4;

export const library = {
  images: new Map(), // uid -> image
  selected: new Set(),
  anchor: "", // the last tile picked, where a shift-click range starts
  query: "",
  category: "",
  nextToken: "",
  loading: false,
  generation: 0,
  failed: false,
};
const thumbs = new Map(); // uid -> object URL of its thumbnail
const pending = new Map(); // uid -> polls so far
let pollTimer = 0;
let hooks = { open: () => {}, changed: () => {} };

export function wireGallery(callbacks) {
  hooks = callbacks;
  const gallery = $("gallery");
  gallery.addEventListener("click", onClick);
  gallery.addEventListener("keydown", onKey);
  $("select-all").addEventListener("click", selectAll);
  $("clear-selection").addEventListener("click", clearSelection);
  $("delete-selected").addEventListener("click", () => removeImages([...library.selected]));
  $("download-selected").addEventListener("click", () => downloadImages([...library.selected]));
  $("load-more").addEventListener("click", () => loadPage());
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) loadPage();
    }, { rootMargin: "800px" }).observe($("more"));
  } else {
    $("load-more").hidden = false;
  }
}

/** Tiles in the order they are shown (days may interleave when taken dates differ from upload order). */
export function orderedUids() {
  return [...$("gallery").querySelectorAll(".tile-item")].map((item) => item.dataset.uid);
}

function tileOf(uid) {
  return $("gallery").querySelector(`.tile-item[data-uid="${CSS.escape(uid)}"]`);
}

// ---- loading -----------------------------------------------------------------------------------------------------

function listPath() {
  const params = new URLSearchParams({ page_size: String(PAGE_SIZE) });
  if (library.nextToken) params.set("page_token", library.nextToken);
  if (library.query) {
    params.set("q", library.query);
    return `/v1/search?${params}`;
  }
  if (library.category) params.set("category", library.category);
  return `/v1/images?${params}`;
}

export function resetGallery() {
  library.generation += 1;
  library.nextToken = "";
  library.loading = false;
  library.failed = false;
  library.images.clear();
  library.selected.clear();
  library.anchor = "";
  for (const url of thumbs.values()) URL.revokeObjectURL(url);
  thumbs.clear();
  pending.clear();
  $("gallery").replaceChildren();
  $("state").hidden = true;
  showSelection();
}

export async function reloadGallery() {
  resetGallery();
  await loadPage(true);
}

/** The next page, appended; keeps loading while the end of the gallery is in sight. */
export async function loadPage(first = false) {
  if (library.loading || library.failed || (!first && !library.nextToken)) return;
  const generation = library.generation;
  library.loading = true;
  $("spinner").hidden = first;
  try {
    const page = await getJson(listPath());
    if (generation !== library.generation) return;
    library.nextToken = page.next_page_token;
    page.images.forEach(addTile);
    showState();
  } catch (err) {
    if (generation !== library.generation) return;
    library.failed = true;
    if (err.status !== 401) showState(err);
  } finally {
    if (generation === library.generation) {
      library.loading = false;
      $("spinner").hidden = true;
    }
  }
  if (generation === library.generation && library.nextToken && endInSight()) loadPage();
}

function endInSight() {
  return $("more").getBoundingClientRect().top < window.innerHeight + 800;
}

function showState(error) {
  const state = $("state");
  const empty = library.images.size === 0;
  state.hidden = !error && !empty;
  state.replaceChildren();
  if (state.hidden) return;
  let title;
  let text;
  if (error) {
    title = "Your photos could not be loaded";
    text = error.message;
  } else if (library.query) {
    title = `No photos match “${library.query}”`;
    text = "Try another word, or clear the search to see every photo.";
  } else if (library.category) {
    title = "No photos in this category any more";
    text = "Choose another category, or All.";
  } else {
    title = "No photos yet";
    text = "Upload some with the Upload button, or drop them anywhere on this page. They are labelled in a moment.";
  }
  state.append(el("p", { class: "state-title" }, title), el("p", {}, text));
  if (error) {
    const retry = el("button", { type: "button", class: "button", textContent: "Try again" });
    retry.addEventListener("click", reloadGallery);
    state.append(retry);
  }
}

// ---- tiles -------------------------------------------------------------------------------------------------------

function daySection(image) {
  const date = photoDate(image);
  const key = dayKey(date);
  const gallery = $("gallery");
  let section = gallery.querySelector(`section[data-day="${key}"]`);
  if (!section) {
    const id = `day-${key}`;
    section = el(
      "section",
      { class: "day", dataset: { day: key }, "aria-labelledby": id },
      el("h2", { id, textContent: dayLabel(date) }),
      el("ul", { class: "grid" }),
    );
    gallery.append(section);
  }
  return section.querySelector(".grid");
}

export function describe(image) {
  if (image.category) return image.category;
  if (image.status === "failed") return "Not labelled";
  return "Being labelled…";
}

function addTile(image, { first = false } = {}) {
  if (library.images.has(image.uid)) {
    updateTile(image);
    return;
  }
  library.images.set(image.uid, image);
  const img = el("img", { alt: "", decoding: "async", draggable: false });
  const tile = el(
    "button",
    { type: "button", class: "tile", dataset: { action: "open" } },
    img,
    el("span", { class: "badge", hidden: true }),
    el("span", { class: "caption" }),
  );
  const check = el("button", { type: "button", class: "check", role: "checkbox", dataset: { action: "select" } });
  check.setAttribute("aria-checked", "false");
  check.append(el("span", { "aria-hidden": "true", textContent: "✓" }));
  const item = el("li", { class: "tile-item", dataset: { uid: image.uid } }, tile, check);
  const grid = daySection(image);
  if (first) grid.prepend(item);
  else grid.append(item);
  updateTile(image);
  thumbObserver.observe(item);
  if (image.status === "pending") watch(image.uid);
}

export function updateTile(image) {
  library.images.set(image.uid, image);
  const item = tileOf(image.uid);
  if (!item) return;
  const title = describe(image);
  const tile = item.querySelector(".tile");
  tile.setAttribute("aria-label", `${title}, ${image.filename}`);
  tile.title = `${title} · ${image.filename}`;
  item.querySelector(".caption").textContent = title;
  const badge = item.querySelector(".badge");
  badge.hidden = image.status === "classified";
  badge.textContent = image.status === "failed" ? "Not labelled" : "Labelling…";
  badge.className = `badge ${image.status}`;
  item.querySelector(".check").setAttribute("aria-label", `Select ${image.filename}`);
}

/** A just-uploaded photo goes to the top, when it belongs in what is shown. */
export function addUploaded(image) {
  if (library.query || library.category) return;
  addTile(image, { first: true });
  const section = tileOf(image.uid).closest("section");
  if (section !== $("gallery").firstElementChild) $("gallery").prepend(section);
  showState();
}

const thumbObserver =
  "IntersectionObserver" in window
    ? new IntersectionObserver(
        (entries) => {
          for (const entry of entries) {
            if (!entry.isIntersecting) continue;
            thumbObserver.unobserve(entry.target);
            loadThumb(entry.target);
          }
        },
        { rootMargin: "600px" },
      )
    : { observe: (item) => loadThumb(item), unobserve: () => {} };

export async function thumbnailUrl(uid) {
  if (thumbs.has(uid)) return thumbs.get(uid);
  const blob = await (await api(`/v1/images/${encodeURIComponent(uid)}/thumbnail`)).blob();
  const url = URL.createObjectURL(blob);
  thumbs.set(uid, url);
  return url;
}

async function loadThumb(item) {
  try {
    item.querySelector("img").src = await thumbnailUrl(item.dataset.uid);
  } catch {
    item.querySelector(".tile").classList.add("broken");
  }
}

// ---- selection ---------------------------------------------------------------------------------------------------

function setSelected(uid, on) {
  if (on) library.selected.add(uid);
  else library.selected.delete(uid);
  const item = tileOf(uid);
  if (!item) return;
  item.classList.toggle("selected", on);
  item.querySelector(".check").setAttribute("aria-checked", String(on));
}

function selectRange(to) {
  const order = orderedUids();
  const from = order.indexOf(library.anchor);
  const end = order.indexOf(to);
  if (from < 0 || end < 0) return setSelected(to, true);
  const [low, high] = from < end ? [from, end] : [end, from];
  order.slice(low, high + 1).forEach((uid) => setSelected(uid, true));
}

function pick(uid, { range = false, toggle = true } = {}) {
  if (range && library.anchor) selectRange(uid);
  else setSelected(uid, toggle ? !library.selected.has(uid) : true);
  library.anchor = uid;
  showSelection();
}

function selectAll() {
  orderedUids().forEach((uid) => setSelected(uid, true));
  showSelection();
}

export function clearSelection() {
  [...library.selected].forEach((uid) => setSelected(uid, false));
  library.anchor = "";
  showSelection();
}

function showSelection() {
  const count = library.selected.size;
  $("selection-bar").hidden = count === 0;
  $("selection-count").textContent = count === 1 ? "1 photo selected" : `${count} photos selected`;
  $("gallery").classList.toggle("selecting", count > 0);
}

function onClick(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const uid = button.closest(".tile-item").dataset.uid;
  const range = event.shiftKey;
  if (button.dataset.action === "select" || range || event.ctrlKey || event.metaKey || library.selected.size) {
    pick(uid, { range });
    return;
  }
  hooks.open(uid);
}

function onKey(event) {
  const item = event.target.closest(".tile-item");
  if (!item || !event.target.classList.contains("tile")) return;
  const uid = item.dataset.uid;
  const key = event.key;
  if (key === "Enter") {
    event.preventDefault();
    hooks.open(uid);
  } else if (key === " ") {
    event.preventDefault();
    pick(uid, { range: event.shiftKey });
  } else if ((key === "a" || key === "A") && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    selectAll();
  } else if (key === "Escape" && library.selected.size) {
    clearSelection();
  } else if (key === "Delete") {
    removeImages(library.selected.size ? [...library.selected] : [uid]);
  } else if (key.startsWith("Arrow")) {
    event.preventDefault();
    moveFocus(item, key);
  }
}

function moveFocus(item, key) {
  const items = [...$("gallery").querySelectorAll(".tile-item")];
  const index = items.indexOf(item);
  const top = item.getBoundingClientRect().top;
  const perRow = Math.max(1, items.filter((other) => other.parentElement === item.parentElement
    && Math.abs(other.getBoundingClientRect().top - top) < 2).length);
  const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -perRow, ArrowDown: perRow }[key] || 0;
  const target = items[Math.min(items.length - 1, Math.max(0, index + step))];
  target.querySelector(".tile").focus();
  target.scrollIntoView({ block: "nearest" });
}

// ---- bulk actions ------------------------------------------------------------------------------------------------

export async function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

function filenameFrom(disposition) {
  const exact = /filename\*=UTF-8''([^;]+)/i.exec(disposition || "");
  if (exact) {
    try {
      return decodeURIComponent(exact[1]);
    } catch {
      // Fall back to the plain name below.
    }
  }
  const plain = /filename="([^"]+)"/i.exec(disposition || "");
  return plain ? plain[1] : "";
}

export async function downloadImages(uids) {
  if (!uids.length) return;
  try {
    const reply =
      uids.length === 1
        ? await api(`/v1/images/${encodeURIComponent(uids[0])}/content?download=true`)
        : await api("/v1/images/archive", { method: "POST", json: { uids } });
    if (uids.length > 1) toast(`Preparing ${uids.length} photos…`);
    const name = filenameFrom(reply.headers.get("Content-Disposition")) || "photos.zip";
    await saveBlob(await reply.blob(), name);
  } catch (err) {
    toast(err.message);
  }
}

async function inBatches(items, task) {
  const results = [];
  for (let start = 0; start < items.length; start += PARALLEL_DELETES) {
    const batch = items.slice(start, start + PARALLEL_DELETES);
    results.push(...(await Promise.allSettled(batch.map(task))));
  }
  return results;
}

function dropTile(uid) {
  const item = tileOf(uid);
  const grid = item?.parentElement;
  item?.remove();
  if (grid && !grid.children.length) grid.closest("section").remove();
  library.images.delete(uid);
  library.selected.delete(uid);
  pending.delete(uid);
}

/** Moves photos to the trash at once, with an Undo in the toast. */
export async function removeImages(uids) {
  if (!uids.length) return [];
  const results = await inBatches(uids, (uid) => api(`/v1/images/${encodeURIComponent(uid)}`, { method: "DELETE" }));
  const gone = uids.filter((_, index) => results[index].status === "fulfilled");
  gone.forEach(dropTile);
  showSelection();
  showState();
  hooks.changed();
  const failed = results.find((result) => result.status === "rejected");
  if (!gone.length) {
    toast(failed.reason.message);
    return gone;
  }
  const words = gone.length === 1 ? "Photo moved to the trash" : `${gone.length} photos moved to the trash`;
  toast(failed ? `${words}; some could not be deleted: ${failed.reason.message}` : words, {
    action: "Undo",
    seconds: 10,
    onAction: () => restoreImages(gone),
  });
  return gone;
}

export async function restoreImages(uids) {
  const results = await inBatches(uids, (uid) => api(`/v1/images/${encodeURIComponent(uid)}/restore`, { method: "POST" }));
  const back = results.filter((result) => result.status === "fulfilled").length;
  toast(back === 1 ? "Photo restored" : `${back} photos restored`);
  hooks.changed();
  await reloadGallery();
}

// ---- photos still being labelled ---------------------------------------------------------------------------------

function watch(uid) {
  if (!pending.has(uid)) pending.set(uid, 0);
  if (!pollTimer) pollTimer = setTimeout(poll, POLL_MS);
}

async function poll() {
  pollTimer = 0;
  for (const [uid, polls] of [...pending]) {
    if (polls >= MAX_POLLS) {
      pending.delete(uid);
      continue;
    }
    pending.set(uid, polls + 1);
    try {
      const image = await getJson(`/v1/images/${encodeURIComponent(uid)}`);
      if (image.status === "pending") continue;
      pending.delete(uid);
      updateTile(image);
      hooks.changed(image);
    } catch (err) {
      if (err.status === 404) pending.delete(uid);
    }
  }
  if (pending.size) pollTimer = setTimeout(poll, POLL_MS);
}
