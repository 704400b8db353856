// Vigil room screen: live values and the session timeline from server-sent events.
// The pages work without this script; it only keeps the session page current.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource) { return; }
  var age = document.getElementById("v-age");
  var source = new EventSource(live.getAttribute("data-src"));
  source.addEventListener("vitals", function (e) {
    var v = JSON.parse(e.data);
    Object.keys(v.values).forEach(function (k) {
      var el = document.getElementById("v-" + k);
      if (el) { el.textContent = v.values[k]; }
    });
    live.setAttribute("data-t", String(v.t_us));
    if (age) {
      age.textContent = v.behind_ms < 0 ? "no data" : "live · " + v.behind_ms + " ms behind the monitor";
    }
  });
  source.addEventListener("advisories", function (e) {
    var box = document.getElementById("advisories-box");
    // Server-rendered and escaped on the appliance, from the same code as the page itself.
    if (box) { box.innerHTML = e.data; }
  });
  source.addEventListener("timeline", function (e) {
    var t = document.getElementById("timeline");
    // Server-rendered and escaped on the appliance, from the same code as the page itself.
    if (t) { t.innerHTML = e.data; }
    live.setAttribute("data-updates", String(Number(live.getAttribute("data-updates") || "0") + 1));
  });
  source.onerror = function () {
    if (age) { age.textContent = "reconnecting…"; }
  };
})();

// The monitoring form's Print button (inline handlers are not allowed by the page's policy).
(function () {
  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
})();
