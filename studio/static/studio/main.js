// Studio's entry point: sign-in, the account panel, banners from /readyz, the tabs (routed by the
// URL's #fragment: #image, #video, #video/<session id>, #live) and the keyboard shortcuts.
//
// A tab is a class with show(argument), shortcut(event) and leave(). Adding one is a module, a
// <section> in the template and an entry in TABS.

import { Api, tinyModelWarning } from "./api.js";
import { ImageTab } from "./image.js";
import { LiveTab } from "./live.js";
import { $, formatBytes, guarded, hideError, setStatus, showError, typing } from "./ui.js";
import { VideoTab } from "./video.js";

const TABS = { image: ImageTab, video: VideoTab, live: LiveTab };

class Studio {
  constructor() {
    const body = document.body;
    this.api = new Api({ apiRoot: body.dataset.apiRoot, readyUrl: body.dataset.readyUrl });
    this.me = null;
    this.tinyWarnings = new Set();
    const context = {
      api: this.api,
      showError,
      checkUploadSize: (file) => this.checkUploadSize(file),
      noteModel: (model) => model?.warning && this.warnTiny(model.warning),
      navigate: (route) => this.navigate(route),
    };
    this.tabs = Object.fromEntries(Object.entries(TABS).map(([name, Tab]) => [name, new Tab(context)]));
    this.active = null;
    $("#sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn($("#key-input").value.trim());
    });
    $("#sign-out").addEventListener("click", () => this.signOut());
    $("#account-refresh").addEventListener("click", () => this.refreshAccount());
    $("#notice-close").addEventListener("click", hideError);
    $("#help-toggle").addEventListener("click", () => this.toggleHelp());
    for (const tab of document.querySelectorAll("[role=tab]")) {
      tab.addEventListener("click", () => this.navigate(tab.dataset.tab));
    }
    window.addEventListener("hashchange", () => this.route());
    document.addEventListener("keydown", (event) => this.keydown(event));
  }

  async start() {
    this.checkReady();
    if (this.api.key) await this.signIn(this.api.key, { remembered: true });
    else this.showSignIn();
  }

  async checkReady() {
    const ready = await this.api.ready();
    const warning = tinyModelWarning(ready);
    if (warning) this.warnTiny(warning);
    const banner = $("#ready-banner");
    if (ready && ready.status !== "ready") {
      const failing = Object.entries(ready.checks ?? {}).filter(([, check]) => !check.ok);
      banner.textContent = `The server is not ready: ${failing.map(([name, check]) => `${name}: ${check.reason ?? check.error ?? check.state ?? "failing"}`).join("; ")}`;
      banner.hidden = false;
    } else {
      banner.hidden = ready !== null;
      if (ready === null) banner.textContent = "The server does not answer /readyz.";
    }
  }

  warnTiny(text) {
    if (this.tinyWarnings.has(text)) return;
    this.tinyWarnings.add(text);
    const banner = $("#tiny-banner");
    banner.textContent = [...this.tinyWarnings].join(" ");
    banner.hidden = false;
  }

  showSignIn() {
    document.body.dataset.signedIn = "false";
    $("#sign-in").hidden = false;
    $("#workspace").hidden = true;
    $("#account").hidden = true;
    $("#key-input").focus();
  }

  async signIn(key, { remembered = false } = {}) {
    if (!key) return;
    hideError();
    this.api.setKey(key);
    const me = await guarded(() => this.api.get("me/"));
    if (!me) {
      // A remembered key that stopped working (revoked, expired) is forgotten like a wrong one.
      this.api.forgetKey();
      this.showSignIn();
      return;
    }
    if (!remembered) $("#key-input").value = "";
    this.renderAccount(me);
    document.body.dataset.signedIn = "true";
    $("#sign-in").hidden = true;
    $("#workspace").hidden = false;
    $("#account").hidden = false;
    await this.route();
  }

  signOut() {
    for (const tab of Object.values(this.tabs)) tab.leave();
    this.api.forgetKey();
    this.me = null;
    hideError();
    setStatus("");
    this.showSignIn();
  }

  async refreshAccount() {
    const me = await guarded(() => this.api.get("me/"));
    if (me) this.renderAccount(me);
  }

  renderAccount(me) {
    this.me = me;
    const quota = me.quota;
    $("#account-user").textContent = me.username;
    $("#account-key").textContent = me.api_key ? `key ${me.api_key}` : "";
    const daily = quota.daily_requests === null ? "" : ` of ${quota.daily_requests}`;
    $("#account-usage").textContent =
      `${me.requests_today}${daily} request${me.requests_today === 1 && !daily ? "" : "s"} today · ${quota.requests_per_minute}/min · ` +
      `${quota.max_concurrent_sessions} session${quota.max_concurrent_sessions === 1 ? "" : "s"} · uploads up to ${formatBytes(quota.max_upload_bytes)}`;
  }

  /** The upload limit from /me, checked before sending: the server refuses only once it has the whole body. */
  checkUploadSize(file) {
    const limit = this.me?.quota?.max_upload_bytes;
    if (limit && file.size > limit) {
      showError({
        name: "ApiError", code: "payload_too_large",
        message: `${file.name} is ${formatBytes(file.size)}, over your upload limit of ${formatBytes(limit)}.`,
      });
      return false;
    }
    return true;
  }

  navigate(route) {
    if (window.location.hash === `#${route}`) this.route();
    else window.location.hash = route;
  }

  async route() {
    if (!this.me) return;
    const [name, argument] = window.location.hash.replace(/^#/, "").split("/");
    const tabName = name in this.tabs ? name : "image";
    this.active = tabName;
    for (const tab of document.querySelectorAll("[role=tab]")) {
      const selected = tab.dataset.tab === tabName;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      $(`#${tab.getAttribute("aria-controls")}`).hidden = !selected;
    }
    if (tabName !== "video") this.tabs.video.leave();
    if (tabName !== "live") this.tabs.live.leave(); // a stream stops when its view goes
    await this.tabs[tabName].show(argument || null);
  }

  toggleHelp() {
    const help = $("#help");
    help.hidden = !help.hidden;
    $("#help-toggle").setAttribute("aria-expanded", String(!help.hidden));
  }

  keydown(event) {
    if (event.altKey || event.metaKey || (event.ctrlKey && event.key.toLowerCase() !== "z") || typing(event)) return;
    if (event.key === "?" || (event.key === "Escape" && !$("#help").hidden)) {
      this.toggleHelp();
      event.preventDefault();
      return;
    }
    if (!this.me || !this.active) return;
    const target = event.target;
    // Buttons keep Enter and Space for themselves.
    if ((event.key === "Enter" || event.key === " ") && target instanceof HTMLButtonElement) return;
    if (this.tabs[this.active].shortcut(event)) event.preventDefault();
  }
}

new Studio().start(); // a module script runs once the document is parsed
