// The gateway's API: the access token lives only in memory, the refresh token only in an HttpOnly cookie.
// A reload or a new tab gets a fresh access token from the cookie; busy servers and lost connections are retried.
import { duration, humanizeDurations, sentence, setOffline, waitWhileBusy } from "./ui.js";

const REFRESH_MARGIN_MS = 60_000;
const BUSY_RETRIES = 5;
const CHANNEL = "tagsmith-session";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const session = { access: "", expiresAt: 0 };
let refreshing = null;
let refreshTimer = 0;
let onSignedOut = () => {};
const channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL) : null;

/** Follows the session of every tab of this site: signing in or out in one does it in all. */
export function watchSession({ signedOut, signedIn }) {
  onSignedOut = signedOut;
  if (!channel) return;
  channel.onmessage = (event) => {
    if (event.data === "signed-out" && session.access) {
      forget();
      signedOut("You signed out in another tab.");
    } else if (event.data === "signed-in" && !session.access) {
      refresh().then(signedIn, () => {});
    }
  };
}

function keep(pair) {
  session.access = pair.access_token;
  session.expiresAt = Date.now() + pair.expires_in * 1000;
  clearTimeout(refreshTimer);
  const wait = Math.max(5_000, pair.expires_in * 1000 - REFRESH_MARGIN_MS);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), wait);
}

function forget() {
  session.access = "";
  session.expiresAt = 0;
  clearTimeout(refreshTimer);
}

// Tabs share one cookie: the lock makes their refreshes take turns, so no tab spends a token that another tab has
// just replaced (which the server would treat as theft and answer by ending the session).
function serialized(task) {
  return navigator.locks ? navigator.locks.request("tagsmith-refresh", task) : task();
}

/** A new access token from the session cookie; rejects when there is no session (or it has ended). */
export function refresh() {
  if (!refreshing) {
    refreshing = serialized(async () => {
      const reply = await send("/v1/auth/refresh", { method: "POST" });
      if (!reply.ok) throw await errorFrom(reply);
      keep(await reply.json());
    }).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function refreshOrEnd() {
  try {
    await refresh();
  } catch (err) {
    if (err.status === 0 || err.status >= 500) throw err;
    forget();
    onSignedOut("Your session has ended. Please sign in again.");
    throw new ApiError(401, "unauthenticated", "Please sign in again.");
  }
}

export async function signIn(username, password, { createAccount = false } = {}) {
  if (createAccount) await api("/v1/auth/register", { method: "POST", json: { username, password }, auth: false });
  const reply = await api("/v1/auth/login?cookie=true", { method: "POST", json: { username, password }, auth: false });
  keep(await reply.json());
  channel?.postMessage("signed-in");
}

/** Ends the session on the server (revoking its refresh token and clearing the cookie) and everywhere here. */
export async function signOut() {
  try {
    if (session.access) await api("/v1/auth/logout", { method: "POST" });
  } catch {
    // Forgetting the session here matters more than telling the server.
  }
  forget();
  channel?.postMessage("signed-out");
}

async function send(path, init) {
  try {
    const reply = await fetch(path, { credentials: "same-origin", ...init });
    setOffline(false);
    return reply;
  } catch {
    setOffline(!navigator.onLine);
    const message = navigator.onLine
      ? "Tagsmith can’t be reached right now. Please try again in a moment."
      : "You’re offline. Check your connection and try again.";
    throw new ApiError(0, "offline", message);
  }
}

function retryAfter(reply) {
  const seconds = Number(reply.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds : 5;
}

/** fetch() with the access token, one refresh on 401, and (for reads) waiting out a busy server. */
export async function api(path, { method = "GET", json, body, auth = true } = {}) {
  let refreshed = false;
  for (let busy = 0; ; ) {
    if (auth && session.expiresAt && Date.now() > session.expiresAt - 30_000) await refreshOrEnd();
    const headers = {};
    if (json !== undefined) headers["Content-Type"] = "application/json";
    if (auth && session.access) headers.Authorization = `Bearer ${session.access}`;
    const payload = json === undefined ? body : JSON.stringify(json);
    const reply = await send(path, { method, headers, body: payload });
    if (reply.status === 401 && auth && !refreshed) {
      refreshed = true;
      await refreshOrEnd();
      continue;
    }
    if (reply.status === 503 && method === "GET" && busy < BUSY_RETRIES) {
      busy += 1;
      await waitWhileBusy(Math.min(retryAfter(reply), 600));
      continue;
    }
    if (!reply.ok) throw await errorFrom(reply);
    return reply;
  }
}

export const getJson = async (path) => (await api(path)).json();

export function accessToken() {
  return session.access;
}

export async function errorFrom(reply) {
  let message = "";
  let code = "error";
  try {
    const body = await reply.json();
    message = body.error.message;
    code = body.error.code;
  } catch {
    // Not our JSON error shape (a proxy's page, say): the status alone decides the words.
  }
  return new ApiError(reply.status, code, humanMessage(reply.status, message, retryAfter(reply)));
}

/** What a person reads for a failure: plain words, durations in minutes, no internal names. */
export function humanMessage(status, message, waitSeconds = 60) {
  if (status === 0) return "You’re offline. Check your connection and try again.";
  if (status === 429) return `Too many attempts. Please try again in ${duration(waitSeconds)}.`;
  if (status === 503 || status === 504) return "The server is busy right now. Please try again in a moment.";
  if (status >= 500) return "Something went wrong on our side. Please try again.";
  if (status === 413) return "This file is too large.";
  if (status === 415) return "This kind of file can’t be uploaded. Use a JPEG, PNG, WebP, GIF or BMP photo.";
  if (status === 404) return "This photo is no longer in your library.";
  return sentence(humanizeDurations(message)) || "That didn’t work. Please try again.";
}
