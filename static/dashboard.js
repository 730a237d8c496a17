// Live channel glue: connection indicator and resume-from-last-seq.
// Everything else is server-rendered HTML swapped by htmx's ws extension.
(() => {
  "use strict";
  const root = document.querySelector("[hx-ws\\:connect]");
  const indicator = document.getElementById("conn");
  if (!root || !indicator) return;
  let seq = Number(root.dataset.seq || 0);
  let epoch = root.dataset.epoch || "";

  const show = (state, text) => {
    indicator.dataset.state = state;
    indicator.querySelector(".conn-text").textContent = text;
  };

  root.addEventListener("htmx:ws:after:connection", (event) => {
    show("live", "live");
    const pair = document.getElementById("pair");
    const hello = { type: "resume", since: seq, epoch, pair: pair ? pair.value : null };
    event.detail.connection.socket.send(JSON.stringify(hello));
  });

  root.addEventListener("htmx:ws:close", (event) => {
    if (event.detail.code === 4401) {
      show("closed", "signed out — reload to log in");
    } else {
      show("reconnecting", "reconnecting…");
    }
  });

  root.addEventListener("htmx:ws:after:message:incoming", (event) => {
    const data = event.detail.message.data;
    if (typeof data !== "string" || data.indexOf('"seq"') < 0) return;
    try {
      const message = JSON.parse(data);
      if (typeof message.seq === "number") seq = message.seq;
      if (message.epoch) epoch = message.epoch;
      root.dataset.seq = String(seq);
    } catch (_) {
      // not JSON: nothing to track
    }
  });
})();
