// Small DOM helpers: elements built with textContent only (server text is never parsed as HTML),
// the notice that shows API errors with their Retry-After wait, a status line, downloads.

export function $(selector, root = document) {
  const found = root.querySelector(selector);
  if (!found) throw new Error(`missing element ${selector}`);
  return found;
}

/** el("li", {class: "x", dataset: {id: 1}, onclick: f}, "text", child, ...) */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

let countdown = null;

/** Shows an error (an ApiError's message, its code and request id, and the wait from Retry-After). */
export function showError(error) {
  const notice = $("#notice");
  const retry = $("#notice-retry", notice);
  clearInterval(countdown);
  notice.hidden = false;
  notice.dataset.code = error.code ?? "error";
  $("#notice-text", notice).textContent = error.message;
  const facts = [error.status ? `HTTP ${error.status}` : null, error.code, error.requestId ? `request ${error.requestId}` : null];
  $("#notice-detail", notice).textContent = facts.filter(Boolean).join(" · ");
  retry.textContent = "";
  if (error.retryAfter !== null && error.retryAfter !== undefined) {
    const until = Date.now() + error.retryAfter * 1000;
    notice.dataset.retryAfter = String(error.retryAfter);
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      retry.textContent = left > 0 ? `Retry in ${left} s.` : "You can retry now.";
      if (left <= 0) clearInterval(countdown);
    };
    tick();
    countdown = setInterval(tick, 1000);
  } else {
    delete notice.dataset.retryAfter;
  }
  if (!(error.name === "ApiError")) console.error(error);
}

export function hideError() {
  clearInterval(countdown);
  $("#notice").hidden = true;
}

/** Runs an action; an error it throws is shown, not lost. Returns its result, or undefined. */
export async function guarded(action) {
  try {
    return await action();
  } catch (error) {
    if (error.name !== "AbortError") {
      setStatus("");
      showError(error);
    }
    return undefined;
  }
}

export function setStatus(text) {
  $("#status-line").textContent = text;
}

export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit ? value.toFixed(value < 10 ? 1 : 0) : value} ${units[unit]}`;
}

/** Whether a keyboard event belongs to a text field (shortcuts stay out of its way). */
export function typing(event) {
  const target = event.target;
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return true;
  return target instanceof HTMLInputElement && !["range", "checkbox", "radio", "button"].includes(target.type);
}
