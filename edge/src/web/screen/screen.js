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

// The central station: tiles replaced as the appliance sends them, ECG strips drawn from the
// samples it streams, and an optional tone while a high-priority advisory is unacknowledged.
(function () {
  "use strict";
  var station = document.getElementById("station");
  if (!station || !window.EventSource) { return; }
  var WINDOW_US = 4000000;
  var strips = {};
  var source = new EventSource(station.getAttribute("data-src"));
  source.addEventListener("tile", function (e) {
    var t = JSON.parse(e.data);
    var old = document.getElementById("tile-" + t.room);
    // Server-rendered and escaped on the appliance, from the same code as the page itself.
    if (old) { old.outerHTML = t.html; } else { station.insertAdjacentHTML("beforeend", t.html); }
    if (!strips[t.room]) { strips[t.room] = []; }
    var tile = document.getElementById("tile-" + t.room);
    if (tile && tile.getAttribute("data-online") === "false") { strips[t.room] = []; }
  });
  source.addEventListener("ecg", function (e) {
    var m = JSON.parse(e.data);
    var s = strips[m.room] || (strips[m.room] = []);
    for (var i = 0; i < m.s.length; i++) { s.push(m.s[i]); }
    var newest = s.length ? s[s.length - 1][0] : 0;
    var cut = 0;
    while (cut < s.length && s[cut][0] < newest - WINDOW_US) { cut++; }
    if (cut) { s.splice(0, cut); }
    var tile = document.getElementById("tile-" + m.room);
    if (tile) { tile.setAttribute("data-ecg", String(newest)); }
  });
  function draw() {
    Object.keys(strips).forEach(function (room) {
      var c = document.getElementById("ecg-" + room);
      var s = strips[room];
      if (!c || !c.getContext) { return; }
      var g = c.getContext("2d");
      g.clearRect(0, 0, c.width, c.height);
      if (s.length < 2) { return; }
      var lo = Infinity, hi = -Infinity;
      for (var i = 0; i < s.length; i++) { lo = Math.min(lo, s[i][1]); hi = Math.max(hi, s[i][1]); }
      var span = Math.max(hi - lo, 1), end = s[s.length - 1][0];
      g.strokeStyle = "#12b76a"; g.lineWidth = 1.5; g.beginPath();
      for (var j = 0; j < s.length; j++) {
        var x = c.width - (end - s[j][0]) / WINDOW_US * c.width;
        var y = c.height - 4 - (s[j][1] - lo) / span * (c.height - 8);
        if (j === 0) { g.moveTo(x, y); } else { g.lineTo(x, y); }
      }
      g.stroke();
    });
    window.requestAnimationFrame(draw);
  }
  window.requestAnimationFrame(draw);
  var tone = document.getElementById("tone");
  var audio = null;
  if (tone) {
    tone.addEventListener("click", function () {
      var on = tone.getAttribute("data-on") !== "true";
      tone.setAttribute("data-on", String(on));
      tone.textContent = "Sound for high-priority advisories: " + (on ? "on" : "off");
      if (on && !audio && (window.AudioContext || window.webkitAudioContext)) {
        audio = new (window.AudioContext || window.webkitAudioContext)();
      }
    });
  }
  // IEC 60601-1-8's high-priority burst, simplified: three short tones, repeated while any
  // high-priority advisory is unacknowledged and the sound is on.
  window.setInterval(function () {
    if (!audio || !tone || tone.getAttribute("data-on") !== "true") { return; }
    if (!document.querySelector(".room-tile:not(.offline) li.adv-high:not(.acked)")) { return; }
    for (var k = 0; k < 3; k++) {
      var o = audio.createOscillator(), v = audio.createGain(), at = audio.currentTime + k * 0.2;
      o.frequency.value = 880; v.gain.value = 0.2;
      o.connect(v); v.connect(audio.destination);
      o.start(at); o.stop(at + 0.12);
    }
  }, 2500);
  source.onerror = function () { station.setAttribute("data-stream", "reconnecting"); };
  source.onopen = function () { station.setAttribute("data-stream", "open"); };
})();
