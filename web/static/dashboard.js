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
    if (s < 59.95) { return s.toFixed(1) + " s"; }  // 1.2 s, not "1 s"
    s = Math.round(s);
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

  var SVG_NS = "http://www.w3.org/2000/svg";

  function svg(tag, attributes, text) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attributes).forEach(function (name) { node.setAttribute(name, attributes[name]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // A step chart of one column of [[seconds since start, lines/s, errors/s], ...] (each value holds
  // from the previous point's time to its own), as inline SVG: the whole run, no external library.
  function drawChart(holder, points, column, small) {
    var w = small ? 120 : 760, h = small ? 28 : 180, left = small ? 1 : 52, bottom = small ? 1 : 18;
    var chart = svg("svg", {viewBox: "0 0 " + w + " " + h, width: w, height: h, "class": "chart-svg",
                            "data-points": points.length, role: "img"});
    chart.appendChild(svg("rect", {x: left + 0.5, y: 0.5, width: w - left - 1, height: h - bottom - 1,
                                   "class": "frame"}));
    var plotH = h - bottom - 4, t1 = points.length ? points[points.length - 1][0] : 0, top = 0;
    if (points.length < 1) {
      if (!small) { chart.appendChild(svg("text", {x: left + 8, y: 20, "class": "label"}, "waiting for data\u2026")); }
      holder.replaceChildren(chart);
      return;
    }
    points.forEach(function (p) { top = Math.max(top, p[column]); });
    var scale = top > 0 ? top * 1.1 : 1;
    function x(t) { return (left + (t1 > 0 ? t / t1 : 1) * (w - left - 4)).toFixed(1); }
    function y(v) { return (2 + plotH - (v / scale) * plotH).toFixed(1); }
    var line = "", previous = 0;
    points.forEach(function (p) {
      line += (line ? " L" : "M") + x(previous) + " " + y(p[column]) + " L" + x(p[0]) + " " + y(p[column]);
      previous = p[0];
    });
    var area = "M" + x(0) + " " + y(0) + " L" + line.slice(1) + " L" + x(t1) + " " + y(0) + " Z";
    chart.appendChild(svg("path", {d: area, "class": "area"}));
    chart.appendChild(svg("path", {d: line, "class": "line"}));
    if (!small) {
      var unit = holder.getAttribute("data-unit") || "";
      chart.appendChild(svg("text", {x: 2, y: 12, "class": "label top"}, "peak " + fmtRate(top) + " " + unit));
      chart.appendChild(svg("text", {x: 2, y: plotH, "class": "label"}, "0"));
      chart.appendChild(svg("text", {x: left, y: h - 4, "class": "label"}, "0 s"));
      chart.appendChild(svg("text", {x: w - 4, y: h - 4, "class": "label end"}, fmtSeconds(t1)));
    }
    holder.replaceChildren(chart);
  }

  function downloadLinks(holder, b, base) {
    var links = document.createDocumentFragment();
    (b.downloads || []).forEach(function (kind) {
      var link = el("a", null, holder.id === "downloads" ? "Download " + kind : kind);
      link.setAttribute("data-download", kind);
      link.href = withToken(base + "download/" + kind + "/" + encodeURIComponent(b.id));
      links.appendChild(link);
      links.appendChild(document.createTextNode(" "));
    });
    holder.replaceChildren(links);
  }

  function fmtMs(v) { return (v === null || v === undefined) ? "\u2013" : String(v); }

  // While running: elapsed, rate and the projected total; once finished: the --benchmark line.
  function fmtTiming(b) {
    if (b.benchmark) { return b.benchmark.line; }
    var t = b.timing;
    return fmtSeconds(t.elapsed) + " of ~" + fmtSeconds(t.projected_total) + ", " + fmtRate(t.lines_per_s) + " lines/s";
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
    link.title = b.name;  // the whole name on hover; the cell shows as much as fits, then an ellipsis
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
    tr.appendChild(el("td", "num", fmtMs(b.latency_ms.p50) + " \u00b7 " + fmtMs(b.latency_ms.p99) + " ms"));
    var spark = el("td", "spark");
    if (b.spark && b.spark.length > 0) { drawChart(spark, b.spark, 1, true); }
    tr.appendChild(spark);
    tr.appendChild(el("td", "bench", b.benchmark ? fmtBenchmark(b.benchmark) : (b.state === "running" ? fmtTiming(b) : "")));
    var files = el("td", "files");
    downloadLinks(files, b, "");
    tr.appendChild(files);
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
      cell.colSpan = 14; empty.appendChild(cell); rows.appendChild(empty);
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
    setField("p50", fmtMs(b.latency_ms.p50));
    setField("p95", fmtMs(b.latency_ms.p95));
    setField("p99", fmtMs(b.latency_ms.p99));
    setField("projected_total", fmtSeconds(b.timing.projected_total));
    setField("benchmark", fmtTiming(b));
    setField("concurrency", b.in_flight + " / " + (b.concurrency_limit === null || b.concurrency_limit === undefined
      ? "\u2013" : b.concurrency_limit) + (b.adaptive ? " (adaptive)" : ""));
    setField("rate_limit", b.rate_limit ? b.rate_limit + " requests/s" : "none");
    setField("overload_share", (100 * (b.overload_share || 0)).toFixed(1) + "%");
    downloadLinks(document.getElementById("downloads"), b, base);
    setField("source", b.source || "\u2013");
    setField("output", b.output || "\u2013");
    setField("reason", b.reason || "");
    setField("waiting", b.waiting || "");
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
    drawChart(document.getElementById("chart-throughput"), b.chart, 1, false);
    drawChart(document.getElementById("chart-errors"), b.chart, 2, false);
  }

  function poll() {
    var page = body.getAttribute("data-page");
    if (page === "index") {
      get("api/batches", updateIndex);
    } else if (page === "batch" && document.getElementById("chart-throughput")) {
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
