// Small shared pieces: element lookup, words for people (sizes, dates, durations), the toast and the banner.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function formatBytes(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(bytes >= 10 * 1024 * 1024 ? 0 : 1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${bytes} bytes`;
}

/** "1 minute", "15 minutes", "2 hours": durations the way people say them. */
export function duration(seconds) {
  const minutes = Math.max(1, Math.ceil(seconds / 60));
  if (minutes < 90) return minutes === 1 ? "1 minute" : `${minutes} minutes`;
  const hours = Math.round(minutes / 60);
  return `${hours} hours`;
}

/** Rewrites "in 896 seconds" in a server message as "in 15 minutes". */
export function humanizeDurations(text) {
  return text.replace(/(\d+)\s*seconds?/g, (_, n) => duration(Number(n)));
}

export function sentence(text) {
  const trimmed = (text || "").trim();
  if (!trimmed) return "";
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?…]$/.test(capital) ? capital : `${capital}.`;
}

const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const shortDate = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });

export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

/** "Today", "Yesterday", or the full date, for the heading of a day's photos. */
export function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (dayKey(date) === dayKey(today)) return "Today";
  if (dayKey(date) === dayKey(yesterday)) return "Yesterday";
  return dayFormat.format(date);
}

export const formatDateTime = (date) => dateTimeFormat.format(date);
export const formatDate = (date) => shortDate.format(date);

/** When the photo was taken if the file says so, else when it was uploaded. */
export function photoDate(image) {
  return new Date(image.taken_at || image.created_at || Date.now());
}

// ---- toast -------------------------------------------------------------------------------------------------------

let toastTimer = 0;

export function toast(message, { action, onAction, seconds = 5 } = {}) {
  const box = $("toast");
  const button = $("toast-action");
  $("toast-text").textContent = message;
  button.hidden = !action;
  button.textContent = action || "";
  button.onclick = () => {
    box.hidden = true;
    onAction();
  };
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, seconds * 1000);
}

// ---- banner: offline and busy ------------------------------------------------------------------------------------

let offline = !navigator.onLine;
let busyUntil = 0;

function showBanner() {
  const banner = $("banner");
  if (offline) {
    banner.textContent = "You’re offline. Your photos will load again when the connection is back.";
    banner.className = "banner offline";
    banner.hidden = false;
    return;
  }
  const left = Math.ceil((busyUntil - Date.now()) / 1000);
  if (left > 0) {
    const when = left < 60 ? `${left} second${left === 1 ? "" : "s"}` : duration(left);
    banner.textContent = `The server is busy. Trying again in ${when}…`;
    banner.className = "banner busy";
    banner.hidden = false;
    return;
  }
  banner.hidden = true;
}

export function setOffline(value) {
  if (offline === value) return;
  offline = value;
  showBanner();
}

/** Shows the busy banner with a countdown, resolving when it reaches zero. */
export function waitWhileBusy(seconds) {
  busyUntil = Math.max(busyUntil, Date.now() + seconds * 1000);
  showBanner();
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      showBanner();
      if (Date.now() >= busyUntil) {
        clearInterval(tick);
        resolve();
      }
    }, 250);
  });
}

export function initBanner() {
  showBanner();
}
