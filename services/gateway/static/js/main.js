// Tagsmith web page: signs in (the session survives reloads and new tabs through an HttpOnly cookie), then shows
// the library, the viewer and the trash.
import { getJson, refresh, signIn, signOut, watchSession } from "./api.js";
import { clearSelection, library, reloadGallery, resetGallery, wireGallery } from "./gallery.js";
import { loadCategories, scheduleCategories, wireSearch } from "./search.js";
import { loadTrash, wireTrash } from "./trash.js";
import { $, initBanner, setOffline, toast } from "./ui.js";
import { loadLimits, wireUploads } from "./uploads.js";
import { openViewer, wireViewer } from "./viewer.js";

// Not a secret: only whether this browser signed in, so a first visit does not ask the server for a session.
const SIGNED_IN_HINT = "tagsmith.signed-in";
let signingUp = false;
let signedIn = false;

// ---- sign in -----------------------------------------------------------------------------------------------------

function setAuthMode(up) {
  signingUp = up;
  for (const [id, selected] of [["tab-sign-in", !up], ["tab-sign-up", up]]) {
    $(id).setAttribute("aria-selected", String(selected));
    $(id).tabIndex = selected ? 0 : -1;
  }
  $("auth-form").setAttribute("aria-labelledby", up ? "tab-sign-up" : "tab-sign-in");
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
  if (signingUp && password.length < 8) {
    error.textContent = "Choose a password of at least 8 characters.";
    return;
  }
  $("auth-submit").disabled = true;
  try {
    await signIn(username, password, { createAccount: signingUp });
    localStorage.setItem(SIGNED_IN_HINT, "1");
    $("password").value = "";
    await enterLibrary();
  } catch (err) {
    error.textContent = err.message;
  } finally {
    $("auth-submit").disabled = false;
  }
}

/** Back to an empty sign-in form, as if the page had just been opened. */
function showSignIn(message = "") {
  signedIn = false;
  localStorage.removeItem(SIGNED_IN_HINT);
  resetGallery();
  if ($("viewer").open) $("viewer").close();
  $("uploads").replaceChildren();
  $("uploads-panel").hidden = true;
  $("chips").replaceChildren();
  $("search-input").value = "";
  library.query = "";
  library.category = "";
  $("auth-form").reset();
  setAuthMode(false);
  $("auth-error").textContent = message;
  $("who").textContent = "";
  $("account").hidden = true;
  $("library-view").hidden = true;
  $("trash-view").hidden = true;
  $("auth-view").hidden = false;
  if (location.hash) history.replaceState(null, "", location.pathname);
  $("username").focus();
}

async function enterLibrary() {
  const me = await getJson("/v1/me");
  signedIn = true;
  $("who").textContent = me.username;
  $("account").hidden = false;
  $("auth-view").hidden = true;
  loadLimits();
  await route();
}

// ---- views -------------------------------------------------------------------------------------------------------

async function route() {
  if (!signedIn) return;
  const trash = location.hash === "#trash";
  $("trash-view").hidden = !trash;
  $("library-view").hidden = trash;
  $("trash-link").setAttribute("aria-current", trash ? "page" : "false");
  if (trash) {
    clearSelection();
    await loadTrash();
    return;
  }
  await Promise.all([loadCategories(), reloadGallery()]);
}

function libraryChanged() {
  scheduleCategories();
}

// ---- start -------------------------------------------------------------------------------------------------------

function wireAuth() {
  $("tab-sign-in").addEventListener("click", () => setAuthMode(false));
  $("tab-sign-up").addEventListener("click", () => setAuthMode(true));
  document.querySelector(".tabs").addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    setAuthMode(!signingUp);
    $(signingUp ? "tab-sign-up" : "tab-sign-in").focus();
  });
  $("auth-form").addEventListener("submit", submitAuth);
  $("sign-out").addEventListener("click", async () => {
    await signOut();
    showSignIn();
  });
  watchSession({
    signedOut: (message) => showSignIn(message),
    signedIn: () => {
      localStorage.setItem(SIGNED_IN_HINT, "1");
      enterLibrary().catch(() => showSignIn());
    },
  });
}

async function start() {
  // Older versions kept tokens in sessionStorage; nothing is kept there now.
  sessionStorage.removeItem("tagsmith.session");
  initBanner();
  wireAuth();
  wireGallery({ open: openViewer, changed: libraryChanged });
  wireViewer();
  wireSearch();
  wireUploads(libraryChanged);
  wireTrash(libraryChanged);
  window.addEventListener("hashchange", route);
  window.addEventListener("offline", () => setOffline(true));
  window.addEventListener("online", () => {
    setOffline(false);
    if (signedIn) route();
  });
  if (!localStorage.getItem(SIGNED_IN_HINT)) {
    showSignIn();
    return;
  }
  try {
    await refresh();
    await enterLibrary();
  } catch (err) {
    showSignIn(err.status === 0 ? err.message : "");
    if (err.status >= 500) toast(err.message);
  }
}

start();
