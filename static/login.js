// The login URL printed at start-up carries the key in the fragment (#key=…), which browsers
// never send to the server: fill it in, drop it from the address bar and history, and log in.
(() => {
  "use strict";
  const match = /^#key=(.+)$/.exec(window.location.hash);
  const input = document.getElementById("api_key");
  if (!match || !input) return;
  history.replaceState(null, "", window.location.pathname);
  input.value = decodeURIComponent(match[1]);
  input.form.requestSubmit();
})();
