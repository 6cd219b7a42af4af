// The websocket of one video session (docs/video-sessions.md): a single-use ticket from the REST API,
// sent as the `ticket.<ticket>` subprotocol (never in the URL, so it stays out of logs); an ack after
// every frame handled, which keeps masks coming inline; reconnection with a fresh ticket when the
// connection drops; close code 4410 when the session has ended.

export const SESSION_ENDED_CLOSE_CODE = 4410;
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 5000, 10000];

export class SessionSocket {
  /** handlers: onMessage(message), onConnection(state, error): "connecting", "open", "retrying", "ended"
   * (the session is over), "closed" (by us) or "failed" (the ticket was refused: error says why). */
  constructor(api, sessionId, { onMessage, onConnection }) {
    this.api = api;
    this.sessionId = sessionId;
    this.onMessage = onMessage;
    this.onConnection = onConnection;
    this.socket = null;
    this.stopped = false;
    this.attempt = 0;
    this.timer = null;
  }

  url() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${window.location.host}/ws/sessions/${this.sessionId}/`;
  }

  async connect() {
    if (this.stopped) return;
    this.onConnection("connecting");
    let ticket;
    try {
      ({ ticket } = await this.api.post(`sessions/${this.sessionId}/ticket/`));
    } catch (error) {
      if (error.status === 410) {
        this.stopped = true;
        this.onConnection("ended");
        return;
      }
      if (error.status && error.status < 500 && error.status !== 429) { // will not get better by retrying
        this.stopped = true;
        this.onConnection("failed", error);
      } else {
        this.retry();
      }
      return;
    }
    if (this.stopped) return;
    const socket = new WebSocket(this.url(), [`ticket.${ticket}`]);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.onConnection("open");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
      if (message.type === "frame" && socket.readyState === WebSocket.OPEN) socket.send('{"type": "ack"}');
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      if (event.code === SESSION_ENDED_CLOSE_CODE) {
        this.stopped = true;
        this.onConnection("ended");
      } else if (!this.stopped) {
        this.retry();
      }
    });
  }

  retry() {
    this.onConnection("retrying");
    const delay = RECONNECT_DELAYS_MS[Math.min(this.attempt++, RECONNECT_DELAYS_MS.length - 1)];
    this.timer = setTimeout(() => this.connect(), delay);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close(1000);
    this.socket = null;
    this.onConnection("closed");
  }
}
