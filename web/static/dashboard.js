// Live dashboard: polls the JSON API every second and updates the page in place.
// Untrusted text (file names, error reasons) is only ever set through textContent.
(function () {
  "use strict";

  var POLL_MS = 1000;
  var body = document.body;
  var base = body.getAttribute("data-base") || "";
  var token = new URLSearchParams(window.location.search).get("token");

  function withToken(url) {
    return token ? url + (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(token) : url;
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) { return "\u2013"; }
    s = Math.round(s);
    if (s < 60) { return s + " s"; }
    var m = Math.floor(s / 60), sec = s % 60;
    if (m < 60) { return m + "m " + (sec < 10 ? "0" : "") + sec + "s"; }
    var h = Math.floor(m / 60);
    m = m % 60;
    return h + "h " + (m < 10 ? "0" : "") + m + "m";
  }

  function fmtNumber(n) { return (n === null || n === undefined) ? "?" : Number(n).toLocaleString("en-US"); }
  function fmtRate(r) { return (r === null || r === undefined) ? "\u2013" : Number(r).toFixed(1); }

  function fmtBenchmark(b) {
    if (!b) { return "\u2013"; }
    return b.elapsed.toFixed(3) + " s, " + fmtRate(b.lines_per_s) + " lines/s (" + fmtNumber(b.lines) +
      " lines, " + b.workers + " workers)";
  }

  function setBar(fill, percent) {
    fill.style.width = Math.max(0, Math.min(100, percent || 0)) + "%";
  }

  // Rates between successive samples: [[t, lines/s], ...]
  function rates(samples) {
    var out = [];
    for (var i = 1; i < samples.length; i++) {
      var dt = samples[i][0] - samples[i - 1][0];
      if (dt > 0) { out.push([samples[i][0], (samples[i][1] - samples[i - 1][1]) / dt]); }
    }
    return out;
  }

  function drawChart(canvas, samples, axes) {
    var ctx = canvas.getContext("2d");
    var w = canvas.width, h = canvas.height;
    var pad = axes ? 36 : 2;
    ctx.clearRect(0, 0, w, h);
    var points = rates(samples);
    ctx.strokeStyle = "#c8cdd3";
    ctx.lineWidth = 1;
    ctx.strokeRect(pad + 0.5, 0.5, w - pad - 1, h - (axes ? 18 : 0) - 1);
    if (points.length < 1) {
      if (axes) { ctx.fillStyle = "#6b7280"; ctx.font = "12px sans-serif"; ctx.fillText("waiting for data\u2026", pad + 8, 20); }
      return;
    }
    var t0 = samples[0][0], t1 = samples[samples.length - 1][0];
    var maxRate = 0;
    points.forEach(function (p) { maxRate = Math.max(maxRate, p[1]); });
    maxRate = maxRate > 0 ? maxRate * 1.1 : 1;
    var plotH = h - (axes ? 18 : 0) - 4;
    function x(t) { return pad + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (w - pad - 4); }
    function y(r) { return 2 + plotH - (r / maxRate) * plotH; }
    ctx.beginPath();
    ctx.moveTo(x(points[0][0]), y(0));
    points.forEach(function (p) { ctx.lineTo(x(p[0]), y(p[1])); });
    ctx.lineTo(x(points[points.length - 1][0]), y(0));
    ctx.closePath();
    ctx.fillStyle = "rgba(37, 99, 235, 0.15)";
    ctx.fill();
    ctx.beginPath();
    points.forEach(function (p, i) { if (i === 0) { ctx.moveTo(x(p[0]), y(p[1])); } else { ctx.lineTo(x(p[0]), y(p[1])); } });
    ctx.strokeStyle = "#2563eb";
    ctx.lineWidth = axes ? 2 : 1.5;
    ctx.stroke();
    if (axes) {
      ctx.fillStyle = "#374151";
      ctx.font = "11px sans-serif";
      ctx.fillText(Math.round(maxRate) + "/s", 2, 12);
      ctx.fillText("0", 2, plotH);
      ctx.fillText(fmtSeconds(t0), pad, h - 4);
      var end = fmtSeconds(t1);
      ctx.fillText(end, w - ctx.measureText(end).width - 4, h - 4);
    }
  }

  function get(url, onData) {
    var request = new XMLHttpRequest();
    request.open("GET", withToken(url));
    request.setRequestHeader("Accept", "application/json");
    request.timeout = 5000;
    request.onload = function () {
      var live = document.getElementById("live");
      if (request.status === 200) {
        if (live) { live.className = "live ok"; live.textContent = "live"; }
        onData(JSON.parse(request.responseText));
      } else if (live) {
        live.className = "live stale"; live.textContent = "HTTP " + request.status;
      }
    };
    request.onerror = request.ontimeout = function () {
      var live = document.getElementById("live");
      if (live) { live.className = "live stale"; live.textContent = "offline"; }
    };
    request.send();
  }

  // -- the list of batches ----------------------------------------------------------------
  function batchRow(b) {
    var tr = el("tr");
    tr.setAttribute("data-batch-id", b.id);
    var name = el("td", "name");
    var link = el("a", null, b.name);
    link.href = withToken("batches/" + encodeURIComponent(b.id));
    name.appendChild(link);
    tr.appendChild(name);
    var state = el("td");
    state.appendChild(el("span", "state state-" + b.state, b.state));
    tr.appendChild(state);
    var progress = el("td", "progress-col");
    var bar = el("div", "bar"), fill = el("div", "fill");
    bar.appendChild(fill);
    setBar(fill, b.percent);
    progress.appendChild(bar);
    progress.appendChild(el("span", "percent", b.percent.toFixed(1) + "%"));
    tr.appendChild(progress);
    tr.appendChild(el("td", "num", fmtNumber(b.done) + " / " + fmtNumber(b.total)));
    tr.appendChild(el("td", "num", fmtNumber(b.succeeded)));
    var errors = el("td", null, fmtNumber(b.failed));
    Object.keys(b.errors_by_kind).sort().forEach(function (kind) {
      errors.appendChild(document.createTextNode(" "));
      errors.appendChild(el("span", "kind", kind + ": " + b.errors_by_kind[kind]));
    });
    tr.appendChild(errors);
    tr.appendChild(el("td", "num", fmtNumber(b.retries)));
    tr.appendChild(el("td", "num", fmtRate(b.rate_now) + " \u00b7 " + fmtRate(b.rate_overall)));
    tr.appendChild(el("td", "num", fmtSeconds(b.elapsed)));
    tr.appendChild(el("td", "num", fmtSeconds(b.eta)));
    var spark = el("td");
    if (b.spark && b.spark.length > 1) {
      var canvas = el("canvas", "spark");
      canvas.width = 120; canvas.height = 28;
      spark.appendChild(canvas);
      drawChart(canvas, b.spark, false);
    }
    tr.appendChild(spark);
    tr.appendChild(el("td", null, b.benchmark ? fmtBenchmark(b.benchmark) : ""));
    return tr;
  }

  function updateIndex(data) {
    Object.keys(data.counts).forEach(function (state) {
      var node = document.querySelector('[data-count="' + state + '"]');
      if (node) { node.textContent = data.counts[state]; }
    });
    var tbody = document.getElementById("batch-rows");
    var rows = document.createDocumentFragment();
    if (data.batches.length === 0) {
      var empty = el("tr", "empty"), cell = el("td", null, "No batches yet.");
      cell.colSpan = 12; empty.appendChild(cell); rows.appendChild(empty);
    }
    data.batches.slice().reverse().forEach(function (b) { rows.appendChild(batchRow(b)); });
    tbody.replaceChildren(rows);
  }

  // -- one batch ------------------------------------------------------------------------
  function field(name) { return document.querySelector('[data-field="' + name + '"]'); }
  function setField(name, text) { var node = field(name); if (node) { node.textContent = text; } }

  function updateBatch(b) {
    var state = field("state");
    if (state) { state.textContent = b.state; state.className = "state state-" + b.state; }
    setBar(field("bar"), b.percent);
    setField("percent", b.percent.toFixed(1));
    setField("done", fmtNumber(b.done));
    setField("total", fmtNumber(b.total));
    setField("succeeded", fmtNumber(b.succeeded));
    setField("failed", fmtNumber(b.failed));
    setField("retries", fmtNumber(b.retries));
    setField("requests", fmtNumber(b.requests));
    setField("rate_now", fmtRate(b.rate_now));
    setField("rate_overall", fmtRate(b.rate_overall));
    setField("mean_latency_ms", b.mean_latency_ms === null ? "\u2013" : b.mean_latency_ms + " ms");
    setField("elapsed", fmtSeconds(b.elapsed));
    setField("eta", fmtSeconds(b.eta));
    setField("benchmark", fmtBenchmark(b.benchmark));
    setField("source", b.source || "\u2013");
    setField("output", b.output || "\u2013");
    setField("reason", b.reason || "");
    var kinds = document.getElementById("error-kinds");
    var items = document.createDocumentFragment();
    var names = Object.keys(b.errors_by_kind).sort();
    if (names.length === 0) { items.appendChild(el("li", "none", "none")); }
    names.forEach(function (kind) {
      var li = el("li");
      li.appendChild(el("code", null, kind));
      li.appendChild(document.createTextNode(": " + b.errors_by_kind[kind]));
      items.appendChild(li);
    });
    kinds.replaceChildren(items);
    var rows = document.createDocumentFragment();
    if (b.latest_errors.length === 0) {
      var empty = el("tr", "empty"), cell = el("td", null, "No errors.");
      cell.colSpan = 3; empty.appendChild(cell); rows.appendChild(empty);
    }
    b.latest_errors.slice().reverse().forEach(function (e) {
      var tr = el("tr");
      tr.appendChild(el("td", "num", e.batch_index));
      var kind = el("td");
      kind.appendChild(el("code", null, e.kind));
      tr.appendChild(kind);
      tr.appendChild(el("td", "reason-text", e.reason));
      rows.appendChild(tr);
    });
    document.getElementById("latest-errors").replaceChildren(rows);
    var canvas = document.getElementById("chart");
    if (canvas) { drawChart(canvas, b.samples, true); }
  }

  function poll() {
    var page = body.getAttribute("data-page");
    if (page === "index") {
      get("api/batches", updateIndex);
    } else if (page === "batch" && document.getElementById("chart")) {
      get(base + "api/batches/" + encodeURIComponent(body.getAttribute("data-batch-id")), updateBatch);
    }
  }

  document.querySelectorAll(".bar .fill").forEach(function (fill) {
    var percent = fill.closest("tr, main").querySelector(".percent, [data-field=percent]");
    if (percent) { setBar(fill, parseFloat(percent.textContent)); }
  });
  poll();
  window.setInterval(poll, POLL_MS);
}());
