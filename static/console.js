// The console's live client: applies the regions the server sends, and keeps the operator's work.
// Regions are server-rendered HTML; this script only decides where and whether to put them.
(() => {
  "use strict";
  const main = document.getElementById("main");
  const conn = document.getElementById("conn");
  const notices = document.querySelector("#notices ol");
  if (!main || !conn) return;
  const view = JSON.parse(main.dataset.view || "{}");
  let seq = Number(main.dataset.seq || 0);
  let epoch = main.dataset.epoch || "";
  let socket = null;
  let paused = false;
  let lastUpdate = Date.now();
  let retry = 0;
  const pending = new Map();

  // -- connection status, "updated N s ago", stale marking --------------------------------
  const utc = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  const show = (state, text) => {
    conn.dataset.state = state;
    conn.querySelector(".conn-text").textContent = text;
  };
  const tickAge = () => {
    const age = Math.max(0, Math.round((Date.now() - lastUpdate) / 1000));
    conn.querySelector(".updated").textContent = `updated ${age} s ago`;
  };
  setInterval(tickAge, 1000);
  const markStale = (stale) => {
    main.classList.toggle("stale", stale);
    const banner = document.getElementById("stale-banner");
    if (!banner) return;
    banner.hidden = !stale;
    if (stale) banner.querySelector(".stale-since").textContent = utc(lastUpdate);
  };

  // -- the operator's work: dirty and focused forms are never replaced ---------------------
  document.addEventListener("input", (event) => {
    const form = event.target.closest && event.target.closest("form");
    if (form && form.method === "post") form.dataset.dirty = "true";
  });
  const editing = (el) => {
    // A form whose request is running is answered with a fresher version of the card anyway.
    if (el.querySelector("form[data-dirty='true'], [aria-busy='true']")) return true;
    const active = document.activeElement;
    return !!active && el.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName) && active.type !== "hidden";
  };
  const baseOf = (el) => {
    const input = el.querySelector("input[name='base']");
    return input ? input.value : null;
  };
  const parse = (html) => {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content;
  };
  const swap = (el, html) => {
    // An answer htmx has put in place may still hold its notice: keep it before replacing it.
    collectNotices(el);
    const focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement.id : "";
    const fragment = parse(html);
    const fresh = fragment.firstElementChild;
    el.replaceWith(fragment);
    if (!fresh) return;
    if (window.htmx) window.htmx.process(fresh);
    collectNotices(fresh);
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus();
    }
  };
  // Regions an htmx request will swap: htmx swaps in steps, so a live version put in meanwhile
  // would race it (and could leave the region twice in the page). It waits until the request ends.
  const inflight = new Set();
  const targetOf = (el) => {
    const source = el instanceof Element ? el.closest("[hx-target]") : null;
    const selector = source ? source.getAttribute("hx-target") : "";
    return selector && selector.startsWith("#") ? selector.slice(1) : "";
  };
  const replace = (id, html) => {
    const el = document.getElementById(id);
    if (!el) return;
    if (inflight.has(id)) { pending.set(id, html); return; }
    if (editing(el)) {
      pending.set(id, html);
      const changed = baseOf(el) !== baseOf(parse(html));
      const banner = el.querySelector("[data-changed-banner]");
      if (banner && changed) banner.hidden = false;
      return;
    }
    pending.delete(id);
    swap(el, html);
  };
  // Once htmx has settled an answer (not before: it is still moving attributes over): a live version of the same state is not needed any more;
  // a newer one is applied unless the operator is editing.
  const settlePending = () => {
    for (const [id, html] of pending) {
      const el = document.getElementById(id);
      if (!el) { pending.delete(id); continue; }
      if (inflight.has(id) || editing(el)) continue;
      pending.delete(id);
      // A card's answer is as fresh as a live version of the same state; a region without
      // a state to compare takes the live version (its notices are kept).
      const base = baseOf(el);
      if (base === null || base !== baseOf(parse(html))) swap(el, html);
    }
  };
  document.addEventListener("htmx:after:settle", settlePending);
  document.addEventListener("focusout", () => {
    // Once the operator leaves a card they did not edit, it may take the newer version.
    setTimeout(() => {
      for (const [id, html] of pending) {
        const el = document.getElementById(id);
        if (!el) { pending.delete(id); continue; }
        const banner = el.querySelector("[data-changed-banner]");
        if (!editing(el) && (!banner || banner.hidden)) { pending.delete(id); swap(el, html); }
      }
    }, 0);
  });
  document.addEventListener("click", (event) => {
    const load = event.target.closest && event.target.closest("[data-load-current]");
    if (!load) return;
    const card = load.closest("[id]");
    const html = card && pending.get(card.id);
    if (!html) return;
    pending.delete(card.id);
    swap(card, html);
    const heading = document.getElementById(card.id)?.querySelector("h2, h3");
    if (heading) heading.focus();
  });

  const insert = (id, html, where) => {
    const box = document.getElementById(id);
    if (!box) return;
    box.querySelectorAll(".placeholder").forEach((row) => row.remove());
    box.insertAdjacentHTML(where === "prepend" ? "afterbegin" : "beforeend", html);
    if (window.htmx) window.htmx.process(box);
    const seen = new Set();
    for (const row of box.querySelectorAll("[data-seq]")) {
      if (seen.has(row.dataset.seq)) row.remove(); else seen.add(row.dataset.seq);
    }
    const limit = Number(box.dataset.limit || 0);
    if (limit) {
      const rows = box.querySelectorAll(":scope > tr");
      for (let i = limit; i < rows.length; i += 1) rows[i].remove();
    }
  };

  const apply = (message) => {
    for (const [id, html] of Object.entries(message.patch || {})) replace(id, html);
    for (const [id, html] of Object.entries(message.prepend || {})) insert(id, html, "prepend");
    for (const [id, html] of Object.entries(message.append || {})) insert(id, html, "append");
    if (typeof message.seq === "number") seq = message.seq;
    if (message.epoch) epoch = message.epoch;
    main.dataset.seq = String(seq);
    lastUpdate = Date.now();
    tickAge();
    main.dispatchEvent(new CustomEvent("console:update", { detail: message }));
  };

  // -- the channel ----------------------------------------------------------------------
  const send = (data) => { if (socket && socket.readyState === 1) socket.send(JSON.stringify(data)); };
  const connect = () => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}${main.dataset.live}`);
    socket.addEventListener("open", () => {
      retry = 0;
      send({ type: "hello", since: seq, epoch, view });
      if (paused) send({ type: "pause" });
      show(paused ? "paused" : "live", paused ? "paused" : "live");
      markStale(false);
      lastUpdate = Date.now();
      tickAge();
    });
    socket.addEventListener("message", (event) => {
      try { apply(JSON.parse(event.data)); } catch (error) { console.error(error); }
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      markStale(true);
      if (event.code === 4401) { show("closed", "signed out — reload to log in"); return; }
      show("reconnecting", "disconnected, reconnecting…");
      retry = Math.min(retry + 1, 5);
      setTimeout(connect, 500 * 2 ** (retry - 1));
    });
  };
  connect();

  const pauseButton = document.getElementById("pause");
  if (pauseButton) {
    pauseButton.addEventListener("click", () => {
      paused = !paused;
      pauseButton.setAttribute("aria-pressed", String(paused));
      pauseButton.textContent = paused ? "Resume updates" : "Pause updates";
      send({ type: paused ? "pause" : "resume" });
      if (socket) show(paused ? "paused" : "live", paused ? "paused" : "live");
    });
  }

  // -- admin requests: busy buttons, focus back where it was, notices ----------------------
  let acted = "";
  let actedSection = "";
  document.addEventListener("submit", (event) => {
    const submitter = event.submitter || event.target.querySelector("button[type=submit]");
    acted = submitter && submitter.id ? submitter.id : "";
    const section = event.target.closest && event.target.closest("section[id]");
    actedSection = section ? section.id : "";
  }, true);
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("button[hx-get]");
    if (button) acted = button.id || "";
  }, true);
  const busy = (el, on) => {
    if (!(el instanceof Element)) return;
    const form = el.closest("form") || el;
    form.setAttribute("aria-busy", String(on));
    form.querySelectorAll("button").forEach((b) => { b.disabled = on; });
    if (form.tagName === "BUTTON") form.disabled = on;
  };
  document.addEventListener("htmx:before:request", (event) => {
    busy(event.target, true);
    const id = targetOf(event.target);
    if (id) inflight.add(id);
  });
  document.addEventListener("htmx:finally:request", (event) => {
    if (event.target.isConnected) busy(event.target, false);
    const id = targetOf(event.target);
    if (id && inflight.delete(id)) settlePending();
  });
  document.addEventListener("htmx:after:swap", (event) => {
    collectNotices(document);
    const target = acted && document.getElementById(acted);
    if (target) target.focus();
    else {
      const region = event.target && event.target.isConnected ? event.target : null;
      // The control acted on may be gone (a reset button once its breaker closed): its section's heading then.
      const heading = (region && region.querySelector ? region.querySelector("h2[tabindex], h3[tabindex]") : null)
        || (actedSection ? document.querySelector(`#${actedSection} h2[tabindex]`) : null);
      if (heading) heading.focus();
    }
  });

  function collectNotices(root) {
    if (!notices) return;
    root.querySelectorAll("[data-notice]").forEach((note) => {
      const item = document.createElement("li");
      item.className = note.className;
      item.append(...note.childNodes);
      const dismiss = document.createElement("button");
      dismiss.type = "button";
      dismiss.className = "dismiss";
      dismiss.textContent = "Dismiss";
      dismiss.addEventListener("click", () => item.remove());
      item.append(" ", dismiss);
      notices.prepend(item);
      setTimeout(() => item.remove(), 1000 * Number(note.dataset.expires || 12));
      note.remove();
    });
  }
  collectNotices(document);

  // -- small conveniences: auto-submitting filters, copying a seq -------------------------
  document.addEventListener("change", (event) => {
    if (event.target.matches && event.target.matches("select[data-autosubmit]")) event.target.form.requestSubmit();
  });
  document.addEventListener("click", async (event) => {
    const button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "Copied";
    } catch (_) {
      const code = button.previousElementSibling;
      if (code) window.getSelection().selectAllChildren(code);
      button.textContent = "Selected";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
  document.querySelector(".skip")?.addEventListener("click", () => main.focus());
})();
