// The search box with tag suggestions (GET /v1/tags?prefix=, filtered here too, and quietly absent when the server
// cannot suggest), and the category chips.
import { getJson } from "./api.js";
import { library, reloadGallery } from "./gallery.js";
import { $, el } from "./ui.js";

const SUGGESTIONS = 8;
const DEBOUNCE_MS = 150;
let suggestTimer = 0;
let suggestGeneration = 0;
let suggestionsWork = true;
let active = -1;

export function wireSearch() {
  const input = $("search-input");
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search(input.value);
  });
  input.addEventListener("input", () => {
    clearTimeout(suggestTimer);
    suggestTimer = setTimeout(() => suggest(input.value), DEBOUNCE_MS);
    if (!input.value.trim() && library.query) search("");
  });
  input.addEventListener("keydown", onKey);
  input.addEventListener("blur", () => setTimeout(closeSuggestions, 150));
}

export function search(text) {
  library.query = text.trim().toLowerCase();
  library.category = "";
  $("search-input").value = library.query;
  closeSuggestions();
  loadCategories();
  reloadGallery();
}

async function suggest(text) {
  const prefix = text.trim().toLowerCase();
  const generation = ++suggestGeneration;
  if (!prefix || !suggestionsWork) return closeSuggestions();
  let tags;
  try {
    ({ tags } = await getJson(`/v1/tags?prefix=${encodeURIComponent(prefix)}`));
  } catch (err) {
    if (err.status === 404) suggestionsWork = false;
    return closeSuggestions();
  }
  if (generation !== suggestGeneration) return;
  const matching = tags.filter((t) => t.tag.split(/\s+/).some((word) => word.startsWith(prefix)) || t.tag.startsWith(prefix));
  showSuggestions(matching.slice(0, SUGGESTIONS));
}

function showSuggestions(tags) {
  const list = $("suggestions");
  active = -1;
  list.replaceChildren(
    ...tags.map((t, index) => {
      const option = el(
        "li",
        { id: `suggestion-${index}`, role: "option", class: "suggestion", dataset: { tag: t.tag } },
        el("span", { textContent: t.tag }),
        el("span", { class: "count", textContent: String(t.count) }),
      );
      option.setAttribute("aria-selected", "false");
      option.addEventListener("mousedown", (event) => {
        event.preventDefault();
        search(t.tag);
      });
      return option;
    }),
  );
  list.hidden = !tags.length;
  $("search-input").setAttribute("aria-expanded", String(!list.hidden));
}

function closeSuggestions() {
  $("suggestions").hidden = true;
  $("search-input").setAttribute("aria-expanded", "false");
  $("search-input").removeAttribute("aria-activedescendant");
  active = -1;
}

function onKey(event) {
  const options = [...$("suggestions").children];
  if ($("suggestions").hidden || !options.length) return;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    active = (active + (event.key === "ArrowDown" ? 1 : -1) + options.length) % options.length;
    options.forEach((option, index) => option.setAttribute("aria-selected", String(index === active)));
    $("search-input").setAttribute("aria-activedescendant", options[active].id);
  } else if (event.key === "Enter" && active >= 0) {
    event.preventDefault();
    search(options[active].dataset.tag);
  } else if (event.key === "Escape") {
    event.preventDefault();
    closeSuggestions();
  }
}

// ---- category chips ----------------------------------------------------------------------------------------------

let categoriesTimer = 0;

export function scheduleCategories() {
  clearTimeout(categoriesTimer);
  categoriesTimer = setTimeout(loadCategories, 400);
}

export async function loadCategories() {
  try {
    const { categories } = await getJson("/v1/categories");
    const total = categories.reduce((sum, c) => sum + c.count, 0);
    const chips = categories.length ? [chip("All", total, "")] : [];
    for (const c of categories.slice(0, 24)) chips.push(chip(c.category, c.count, c.category));
    $("chips").replaceChildren(...chips);
  } catch {
    // The gallery works without the chips.
  }
}

function chip(label, count, category) {
  const active = !library.query && library.category === category;
  const button = el(
    "button",
    { type: "button", class: "chip" },
    el("span", { textContent: label }),
    el("span", { class: "count", textContent: String(count) }),
  );
  button.setAttribute("aria-pressed", String(active));
  button.addEventListener("click", () => {
    library.category = library.category === category ? "" : category;
    library.query = "";
    $("search-input").value = "";
    loadCategories();
    reloadGallery();
  });
  return button;
}
