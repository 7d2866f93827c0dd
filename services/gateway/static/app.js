// Tagsmith web page: sign in, upload with progress, browse, search, filter, download and delete.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SESSION_KEY = "tagsmith.session";
  const PAGE_SIZE = 24;
  const PARALLEL_UPLOADS = 3;
  const POLL_MS = 2000;
  const MAX_POLLS = 90;
  const REFRESH_MARGIN_MS = 60_000;

  const session = { access: "", refresh: "", expiresAt: 0, username: "" };
  const view = { query: "", category: "", nextToken: "", limits: null, generation: 0 };
  const thumbs = new Map(); // uid -> object URL
  const pending = new Map(); // uid -> polls so far
  const uploadQueue = [];
  let activeUploads = 0;
  let refreshing = null;
  let refreshTimer = 0;
  let pollTimer = 0;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // ---- session ---------------------------------------------------------------------------------------------------

  function storeTokens(pair) {
    session.access = pair.access_token;
    session.refresh = pair.refresh_token;
    session.expiresAt = Date.now() + pair.expires_in * 1000;
    persist();
    clearTimeout(refreshTimer);
    const wait = Math.max(5_000, session.expiresAt - Date.now() - REFRESH_MARGIN_MS);
    refreshTimer = setTimeout(() => refreshTokens().catch(() => {}), wait);
  }

  function persist() {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  }

  function restore() {
    try {
      Object.assign(session, JSON.parse(sessionStorage.getItem(SESSION_KEY) || "{}"));
    } catch {
      sessionStorage.removeItem(SESSION_KEY);
    }
    return Boolean(session.refresh);
  }

  function forget() {
    Object.assign(session, { access: "", refresh: "", expiresAt: 0, username: "" });
    sessionStorage.removeItem(SESSION_KEY);
    clearTimeout(refreshTimer);
  }

  async function refreshTokens() {
    if (!refreshing) {
      refreshing = (async () => {
        try {
          const reply = await fetch("/v1/auth/refresh", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ refresh_token: session.refresh }),
          });
          if (!reply.ok) throw await errorFrom(reply);
          storeTokens(await reply.json());
        } finally {
          refreshing = null;
        }
      })();
    }
    return refreshing;
  }

  async function freshToken() {
    if (session.refresh && Date.now() > session.expiresAt - 30_000) {
      try {
        await refreshTokens();
      } catch {
        signedOut("Your session has ended. Please sign in again.");
        throw new ApiError(401, "unauthenticated", "Please sign in again.");
      }
    }
    return session.access;
  }

  // ---- HTTP ------------------------------------------------------------------------------------------------------

  async function errorFrom(reply) {
    try {
      const body = await reply.json();
      return new ApiError(reply.status, body.error.code, body.error.message);
    } catch {
      return new ApiError(reply.status, "error", `The server answered ${reply.status}.`);
    }
  }

  async function api(path, { method = "GET", json, auth = true, retried = false } = {}) {
    const headers = {};
    if (json !== undefined) headers["Content-Type"] = "application/json";
    if (auth) headers.Authorization = `Bearer ${await freshToken()}`;
    const reply = await fetch(path, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
    if (reply.status === 401 && auth && !retried && session.refresh) {
      try {
        await refreshTokens();
      } catch {
        signedOut("Your session has ended. Please sign in again.");
        throw await errorFrom(reply);
      }
      return api(path, { method, json, auth, retried: true });
    }
    if (!reply.ok) throw await errorFrom(reply);
    return reply;
  }

  const getJson = async (path) => (await api(path)).json();

  // ---- sign in / sign up -----------------------------------------------------------------------------------------

  let signingUp = false;

  function setAuthMode(up) {
    signingUp = up;
    $("tab-sign-in").setAttribute("aria-selected", String(!up));
    $("tab-sign-up").setAttribute("aria-selected", String(up));
    $("auth-submit").textContent = up ? "Create account" : "Sign in";
    $("password").autocomplete = up ? "new-password" : "current-password";
    $("password-hint").hidden = !up;
    $("auth-error").textContent = "";
  }

  async function submitAuth(event) {
    event.preventDefault();
    const username = $("username").value.trim();
    const password = $("password").value;
    const error = $("auth-error");
    error.textContent = "";
    if (!username || !password) {
      error.textContent = "Enter a username and a password.";
      return;
    }
    $("auth-submit").disabled = true;
    try {
      if (signingUp) await api("/v1/auth/register", { method: "POST", json: { username, password }, auth: false });
      const reply = await api("/v1/auth/login", { method: "POST", json: { username, password }, auth: false });
      storeTokens(await reply.json());
      $("password").value = "";
      await enterLibrary();
    } catch (err) {
      error.textContent = err.message;
    } finally {
      $("auth-submit").disabled = false;
    }
  }

  async function enterLibrary() {
    const me = await getJson("/v1/me");
    session.username = me.username;
    persist();
    $("who").textContent = me.username;
    $("account").hidden = false;
    $("auth-view").hidden = true;
    $("library-view").hidden = false;
    $("main").focus();
    loadLimits();
    await Promise.all([loadCategories(), loadImages(true)]);
  }

  function signedOut(message) {
    forget();
    clearGallery();
    $("uploads").replaceChildren();
    $("account").hidden = true;
    $("library-view").hidden = true;
    $("auth-view").hidden = false;
    $("auth-error").textContent = message || "";
    $("username").focus();
  }

  async function signOut() {
    const refresh = session.refresh;
    try {
      if (refresh) await api("/v1/auth/logout", { method: "POST", json: { refresh_token: refresh } });
    } catch {
      // Signing out locally matters more than telling the server.
    }
    signedOut("");
  }

  // ---- limits ----------------------------------------------------------------------------------------------------

  async function loadLimits() {
    try {
      view.limits = await getJson("/v1/limits");
      const kinds = view.limits.content_types.map((t) => t.replace("image/", "").toUpperCase()).join(", ");
      $("limits-text").textContent = `${kinds} · up to ${formatBytes(view.limits.max_bytes)} each`;
    } catch {
      view.limits = null;
    }
  }

  function refusal(file) {
    const limits = view.limits;
    if (!limits) return "";
    if (file.size > limits.max_bytes) return `Larger than ${formatBytes(limits.max_bytes)}`;
    if (file.type && !limits.content_types.includes(file.type)) return "Not a supported image type";
    return "";
  }

  // ---- uploads ---------------------------------------------------------------------------------------------------

  function addFiles(files) {
    for (const file of files) {
      const row = uploadRow(file);
      const problem = refusal(file);
      if (problem) finishRow(row, false, problem);
      else uploadQueue.push({ file, row });
    }
    pumpUploads();
  }

  function uploadRow(file) {
    const row = document.createElement("li");
    row.className = "upload";
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", `Upload of ${file.name}`);
    const state = document.createElement("span");
    state.className = "upload-state";
    state.textContent = "Waiting…";
    row.append(name, bar, state);
    $("uploads").prepend(row);
    return row;
  }

  function finishRow(row, ok, text) {
    row.classList.add(ok ? "done" : "failed");
    row.querySelector("progress").value = ok ? 100 : 0;
    row.querySelector(".upload-state").textContent = text;
    if (ok) setTimeout(() => row.remove(), 6000);
  }

  function pumpUploads() {
    while (activeUploads < PARALLEL_UPLOADS && uploadQueue.length) {
      const { file, row } = uploadQueue.shift();
      activeUploads += 1;
      uploadFile(file, row)
        .then((image) => {
          finishRow(row, true, image.category ? `Done · ${image.category}` : "Stored · classifying…");
          addUploaded(image);
        })
        .catch((err) => finishRow(row, false, err.message))
        .finally(() => {
          activeUploads -= 1;
          pumpUploads();
        });
    }
  }

  async function uploadFile(file, row, retried = false) {
    const token = await freshToken();
    const reply = await sendWithProgress(file, row, token);
    if (reply.status === 401 && !retried) {
      await refreshTokens();
      return uploadFile(file, row, true);
    }
    if (reply.status !== 201) throw parseXhrError(reply);
    return JSON.parse(reply.body);
  }

  function sendWithProgress(file, row, token) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const bar = row.querySelector("progress");
      const state = row.querySelector(".upload-state");
      xhr.open("POST", "/v1/images");
      xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.upload.onprogress = (event) => {
        if (!event.lengthComputable) return;
        bar.value = Math.round((event.loaded / event.total) * 100);
        state.textContent = bar.value < 100 ? `${bar.value}%` : "Classifying…";
      };
      xhr.onload = () => resolve({ status: xhr.status, body: xhr.responseText });
      xhr.onerror = () => reject(new ApiError(0, "network", "Network error; check your connection."));
      const form = new FormData();
      form.append("image", file, file.name);
      state.textContent = "0%";
      xhr.send(form);
    });
  }

  function parseXhrError(reply) {
    try {
      const body = JSON.parse(reply.body);
      return new ApiError(reply.status, body.error.code, body.error.message);
    } catch {
      return new ApiError(reply.status, "error", `Upload failed (${reply.status}).`);
    }
  }

  function addUploaded(image) {
    const gallery = $("gallery");
    const existing = gallery.querySelector(`[data-uid="${CSS.escape(image.uid)}"]`);
    if (existing) existing.remove();
    if (!view.query && !view.category) {
      gallery.prepend(renderCard(image));
      $("empty").hidden = true;
    }
    if (image.status === "pending") watch(image.uid);
    scheduleCategories();
  }

  // ---- gallery ---------------------------------------------------------------------------------------------------

  function clearGallery() {
    for (const url of thumbs.values()) URL.revokeObjectURL(url);
    thumbs.clear();
    pending.clear();
    $("gallery").replaceChildren();
  }

  function listPath() {
    const params = new URLSearchParams({ page_size: String(PAGE_SIZE) });
    if (view.nextToken) params.set("page_token", view.nextToken);
    if (view.query) {
      params.set("q", view.query);
      return `/v1/search?${params}`;
    }
    if (view.category) params.set("category", view.category);
    return `/v1/images?${params}`;
  }

  async function loadImages(reset) {
    const generation = reset ? ++view.generation : view.generation;
    if (reset) view.nextToken = "";
    const status = $("status-line");
    status.textContent = "Loading…";
    try {
      const page = await getJson(listPath());
      if (generation !== view.generation) return;
      if (reset) clearGallery();
      const cards = page.images.map(renderCard);
      $("gallery").append(...cards);
      page.images.filter((i) => i.status === "pending").forEach((i) => watch(i.uid));
      view.nextToken = page.next_page_token;
      $("load-more").hidden = !view.nextToken;
      const shown = $("gallery").children.length;
      $("empty").hidden = shown > 0 || Boolean(view.query || view.category);
      status.textContent = describeView(shown);
    } catch (err) {
      status.textContent = "";
      if (err.status !== 401) toast(err.message);
    }
  }

  function describeView(shown) {
    if (view.query) return shown ? `Photos tagged “${view.query}”` : `Nothing tagged “${view.query}” yet.`;
    if (view.category) return `Category: ${view.category}`;
    return "";
  }

  function renderCard(image) {
    const card = $("card-template").content.firstElementChild.cloneNode(true);
    card.dataset.uid = image.uid;
    fillCard(card, image);
    card.querySelector('[data-action="download"]').addEventListener("click", () => download(image.uid));
    card.querySelector('[data-action="delete"]').addEventListener("click", () => remove(card));
    loadThumb(card, image);
    return card;
  }

  function fillCard(card, image) {
    const title = image.category || (image.status === "failed" ? "Could not classify" : "Classifying…");
    card.querySelector(".category").textContent = title;
    card.querySelector(".filename").textContent = image.filename || image.uid;
    card.querySelector(".filename").title = image.filename || "";
    const badge = card.querySelector(".badge");
    badge.hidden = image.status === "classified";
    badge.textContent = image.status === "failed" ? "Failed" : "Pending";
    badge.className = `badge ${image.status}`;
    card.querySelector("img").alt = image.category ? `${image.category}: ${image.filename}` : image.filename;
    card.querySelector(".labels").replaceChildren(...image.labels.slice(0, 3).map(labelItem));
    const tags = image.tags.slice(0, 6).map((tag) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "tag";
      button.textContent = tag;
      button.addEventListener("click", () => search(tag));
      item.append(button);
      return item;
    });
    card.querySelector(".tags").replaceChildren(...tags);
    card.classList.toggle("is-pending", image.status === "pending");
  }

  function labelItem(label) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label-name";
    name.textContent = label.label;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${Math.round(label.score * 100)}%`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(2, Math.round(label.score * 100))}%`;
    bar.append(fill);
    item.append(name, score, bar);
    return item;
  }

  async function loadThumb(card, image) {
    const img = card.querySelector("img");
    const cached = thumbs.get(image.uid);
    if (cached) {
      img.src = cached;
      return;
    }
    try {
      const blob = await (await api(`/v1/images/${encodeURIComponent(image.uid)}/thumbnail`)).blob();
      const url = URL.createObjectURL(blob);
      thumbs.set(image.uid, url);
      img.src = url;
    } catch {
      card.querySelector(".thumb").classList.add("broken");
    }
  }

  async function download(uid) {
    try {
      const reply = await api(`/v1/images/${encodeURIComponent(uid)}/content?download=true`);
      const name = filenameFrom(reply.headers.get("Content-Disposition")) || uid;
      const url = URL.createObjectURL(await reply.blob());
      const link = document.createElement("a");
      link.href = url;
      link.download = name;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      toast(err.message);
    }
  }

  function filenameFrom(disposition) {
    const match = /filename\*=UTF-8''([^;]+)/i.exec(disposition || "");
    if (!match) return "";
    try {
      return decodeURIComponent(match[1]);
    } catch {
      return "";
    }
  }

  async function remove(card) {
    const name = card.querySelector(".filename").textContent;
    if (!window.confirm(`Delete ${name}? This cannot be undone.`)) return;
    try {
      await api(`/v1/images/${encodeURIComponent(card.dataset.uid)}`, { method: "DELETE" });
      const url = thumbs.get(card.dataset.uid);
      if (url) URL.revokeObjectURL(url);
      thumbs.delete(card.dataset.uid);
      card.remove();
      toast(`Deleted ${name}`);
      $("empty").hidden = $("gallery").children.length > 0 || Boolean(view.query || view.category);
      scheduleCategories();
    } catch (err) {
      toast(err.message);
    }
  }

  // ---- pending images --------------------------------------------------------------------------------------------

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
        const card = $("gallery").querySelector(`[data-uid="${CSS.escape(uid)}"]`);
        if (card) fillCard(card, image);
        scheduleCategories();
      } catch (err) {
        if (err.status === 404) pending.delete(uid);
      }
    }
    if (pending.size && session.access) pollTimer = setTimeout(poll, POLL_MS);
  }

  // ---- categories and search -------------------------------------------------------------------------------------

  let categoriesTimer = 0;

  function scheduleCategories() {
    clearTimeout(categoriesTimer);
    categoriesTimer = setTimeout(loadCategories, 400);
  }

  async function loadCategories() {
    try {
      const { categories } = await getJson("/v1/categories");
      const total = categories.reduce((sum, c) => sum + c.count, 0);
      const chips = [chip("All", total, "")];
      for (const c of categories.slice(0, 24)) chips.push(chip(c.category, c.count, c.category));
      $("chips").replaceChildren(...chips);
    } catch {
      // The gallery still works without the chips.
    }
  }

  function chip(label, count, category) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    const active = !view.query && view.category === category;
    button.setAttribute("aria-pressed", String(active));
    const text = document.createElement("span");
    text.textContent = label;
    const number = document.createElement("span");
    number.className = "count";
    number.textContent = String(count);
    button.append(text, number);
    button.addEventListener("click", () => {
      view.category = view.category === category ? "" : category;
      view.query = "";
      $("search-input").value = "";
      loadCategories();
      loadImages(true);
    });
    return button;
  }

  function search(query) {
    view.query = query.trim();
    view.category = "";
    $("search-input").value = view.query;
    loadCategories();
    loadImages(true);
  }

  // ---- small things ----------------------------------------------------------------------------------------------

  let toastTimer = 0;

  function toast(message) {
    const box = $("toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      box.hidden = true;
    }, 4000);
  }

  function formatBytes(bytes) {
    if (bytes >= 1024 * 1024) return `${Math.round(bytes / (1024 * 1024))} MB`;
    if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
    return `${bytes} bytes`;
  }

  function wireDropzone() {
    const zone = $("dropzone");
    const input = $("file-input");
    $("choose-button").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      addFiles([...input.files]);
      input.value = "";
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      addFiles([...event.dataTransfer.files]);
    });
    // A file dropped outside the zone must not make the browser leave the page.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }

  function start() {
    $("tab-sign-in").addEventListener("click", () => setAuthMode(false));
    $("tab-sign-up").addEventListener("click", () => setAuthMode(true));
    document.querySelector(".tabs").addEventListener("keydown", (event) => {
      if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
      setAuthMode(!signingUp);
      $(signingUp ? "tab-sign-up" : "tab-sign-in").focus();
    });
    $("auth-form").addEventListener("submit", submitAuth);
    $("sign-out").addEventListener("click", signOut);
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      search($("search-input").value);
    });
    $("load-more").addEventListener("click", () => loadImages(false));
    wireDropzone();
    if (restore()) {
      if (session.expiresAt > Date.now()) storeTokens(tokensFromSession());
      enterLibrary().catch(() => signedOut(""));
    }
  }

  function tokensFromSession() {
    return {
      access_token: session.access,
      refresh_token: session.refresh,
      expires_in: Math.round((session.expiresAt - Date.now()) / 1000),
    };
  }

  start();
})();
