// The session's live desktop: noVNC over the server's relay, scaled to its
// pane, view-only unless control is asked for. It reconnects by itself
// while the session is running: after a pause, a restore or a restart of
// the server, the picture comes back without a reload.

import RFB from "/ui/novnc/core/rfb.js";
import { token, seg } from "./lib.js";

export class Desktop {
  /** The desktop of session `id`, drawn into `screen` (an empty div). */
  constructor(id, screen) {
    this.id = id;
    this.screen = screen;
    this.control = false;
    this.wanted = false;
    this.rfb = null;
    this.retry = null;
    this.delay = 500;
    this.mark("");
  }

  /** Connect (and stay connected) while `on`; let go when not. */
  want(on) {
    this.wanted = on;
    if (on && !this.rfb && !this.retry) this.connect();
    if (!on) this.drop();
  }

  /** Reconnects with or without the right to send input. */
  setControl(on) {
    this.control = on;
    this.drop();
    if (this.wanted) this.connect();
  }

  close() {
    this.wanted = false;
    this.drop();
  }

  /** `data-connected` on the pane says how it is connected ("" when not). */
  mark(how) {
    this.screen.dataset.connected = how;
  }

  drop() {
    clearTimeout(this.retry);
    this.retry = null;
    const rfb = this.rfb;
    this.rfb = null;
    rfb?.disconnect();
    this.mark("");
  }

  connect() {
    this.retry = null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = `token=${encodeURIComponent(token.get())}${this.control ? "&control=true" : ""}`;
    const url = `${scheme}://${location.host}/vnc/${seg(this.id)}/stream?${query}`;
    const rfb = new RFB(this.screen, url);
    rfb.viewOnly = !this.control;
    rfb.scaleViewport = true;
    rfb.addEventListener("connect", () => {
      if (this.rfb !== rfb) return;
      this.delay = 500;
      this.mark(this.control ? "control" : "view");
    });
    rfb.addEventListener("disconnect", () => {
      if (this.rfb !== rfb) return; // let go on purpose
      this.rfb = null;
      this.mark("");
      if (this.wanted) {
        // Gone while wanted: the computer paused or restarted, or the
        // server did. Try again, a little later each time (at most 5 s).
        this.retry = setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 5000);
      }
    });
    this.rfb = rfb;
  }
}
