// The trash: deleted photos, each with the day it goes for good, to restore or delete at once.
import { api, getJson } from "./api.js";
import { $, el, formatDate, toast } from "./ui.js";

let nextToken = "";
let generation = 0;
let onChanged = () => {};
const urls = [];

export function wireTrash(changed) {
  onChanged = changed;
  $("trash-more").addEventListener("click", () => loadTrash(false));
}

export async function loadTrash(first = true) {
  const mine = first ? ++generation : generation;
  if (first) {
    nextToken = "";
    urls.splice(0).forEach((url) => URL.revokeObjectURL(url));
    $("trash-list").replaceChildren();
  }
  const params = new URLSearchParams({ page_size: "50" });
  if (nextToken) params.set("page_token", nextToken);
  try {
    const page = await getJson(`/v1/trash?${params}`);
    if (mine !== generation) return;
    $("trash-note").textContent =
      `Deleted photos stay here for ${page.retention_days} days, then they are deleted for good.`;
    $("trash-list").append(...page.images.map(trashItem));
    nextToken = page.next_page_token;
  } catch (err) {
    toast(err.message);
  }
  $("trash-more").hidden = !nextToken;
  $("trash-state").hidden = $("trash-list").children.length > 0;
}

function trashItem(image) {
  const img = el("img", { alt: "", decoding: "async" });
  const restore = el("button", { type: "button", class: "button small", textContent: "Restore" });
  const forever = el("button", { type: "button", class: "button small danger", textContent: "Delete for good" });
  restore.setAttribute("aria-label", `Restore ${image.filename}`);
  forever.setAttribute("aria-label", `Delete ${image.filename} for good`);
  const until = image.purge_at ? `Deleted for good on ${formatDate(new Date(image.purge_at))}` : "";
  const item = el(
    "li",
    { class: "trash-item", dataset: { uid: image.uid } },
    el("div", { class: "trash-thumb" }, img),
    el(
      "div",
      { class: "trash-info" },
      el("p", { class: "trash-name", textContent: image.category || image.filename }),
      el("p", { class: "hint", textContent: until }),
    ),
    el("div", { class: "trash-actions" }, restore, forever),
  );
  restore.addEventListener("click", () => act(item, image, "restore"));
  forever.addEventListener("click", () => act(item, image, "forever"));
  loadThumb(img, image.uid);
  return item;
}

async function loadThumb(img, uid) {
  try {
    const url = URL.createObjectURL(await (await api(`/v1/images/${encodeURIComponent(uid)}/thumbnail`)).blob());
    urls.push(url);
    img.src = url;
  } catch {
    img.closest(".trash-thumb").classList.add("broken");
  }
}

async function act(item, image, what) {
  const uid = encodeURIComponent(image.uid);
  try {
    if (what === "restore") await api(`/v1/images/${uid}/restore`, { method: "POST" });
    else await api(`/v1/trash/${uid}`, { method: "DELETE" });
  } catch (err) {
    toast(err.message);
    return;
  }
  item.remove();
  $("trash-state").hidden = $("trash-list").children.length > 0;
  toast(what === "restore" ? `${image.filename} is back in your photos` : `${image.filename} was deleted for good`);
  onChanged();
}
