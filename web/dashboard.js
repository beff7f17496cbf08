// orderflow dashboard: draws the monitor's snapshots (SSE `snapshot` events from
// /v1/monitor/stream) with uPlot. No build step; the server serves this file as it is.
"use strict";
(function () {
  const KEEP = 240; // points: two minutes at two snapshots a second
  const $ = (id) => document.getElementById(id);
  const fmt = (n, d = 0) => (n === null || n === undefined || Number.isNaN(n) ? "–" : Number(n).toFixed(d));
  const text = (s) => document.createTextNode(s === null || s === undefined ? "" : String(s));

  const series = {
    t: [], ready: [], unacked: [], admitted: [], shed: [], decided: [],
    p50: [], p95: [], p99: [], target: [], stock: [], orders: [],
  };
  // What a test (or a curious operator in the console) can read.
  const state = { snapshots: 0, refused: 0, episodes: [], last: null, charts: null };
  window.orderflowDashboard = state;

  function chart(el, title, lines) {
    const width = Math.max(320, el.clientWidth || el.parentElement.clientWidth - 28);
    return new uPlot({
      width, height: 220,
      scales: { x: { time: true } },
      legend: { live: false },
      series: [{}].concat(lines.map(([label, stroke, dash]) => ({ label, stroke, width: 2, dash, points: { show: false } }))),
      axes: [{}, { size: 60 }],
    }, [[]].concat(lines.map(() => [])), el);
  }

  const charts = state.charts = {
    depth: chart($("chart-depth"), "depth", [["ready", "#0969da"], ["unacked (here)", "#8250df"]]),
    flow: chart($("chart-flow"), "flow", [["admitted/s", "#1a7f37"], ["shed/s", "#cf222e"], ["decided/s", "#0969da"]]),
    latency: chart($("chart-latency"), "latency", [["p50", "#1a7f37"], ["p95", "#9a6700"], ["p99", "#cf222e"], ["target", "#59636e", [6, 4]]]),
    memory: chart($("chart-memory"), "memory", [["stock rows", "#0969da"], ["order rows", "#8250df"]]),
  };

  function push(s) {
    const checkout = (s.queues || []).find((q) => q.name === "orders.checkout") || {};
    const writer = (name) => ((s.memory_ahead_of_disk || []).find((w) => w.writer === name) || {}).rows || 0;
    const t = s.at ? Date.parse(s.at) / 1000 : Date.now() / 1000;
    const values = {
      t, ready: checkout.ready ?? null, unacked: checkout.unacked ?? 0,
      admitted: s.admitted_per_s, shed: s.shed_per_s, decided: s.decided_per_s,
      p50: s.latency && s.latency.count ? s.latency.p50_ms : null,
      p95: s.latency && s.latency.count ? s.latency.p95_ms : null,
      p99: s.latency && s.latency.count ? s.latency.p99_ms : null,
      target: s.admission ? s.admission.target_ms : null,
      stock: writer("stock"), orders: writer("orders"),
    };
    for (const k of Object.keys(series)) {
      series[k].push(values[k]);
      if (series[k].length > KEEP) series[k].shift();
    }
    charts.depth.setData([series.t, series.ready, series.unacked]);
    charts.flow.setData([series.t, series.admitted, series.shed, series.decided]);
    charts.latency.setData([series.t, series.p50, series.p95, series.p99, series.target]);
    charts.memory.setData([series.t, series.stock, series.orders]);
  }

  function header(s) {
    const role = $("role");
    role.textContent = s.role || "?";
    role.className = "badge " + (s.role === "active" ? "active" : "");
    const a = s.admission || {};
    const badge = $("admission-state");
    badge.textContent = "admission: " + (a.state || "?");
    badge.className = "badge " + (a.state || "");
    badge.dataset.state = a.state || "unknown";
    $("admission-reason").textContent = a.reason ? "reason: " + a.reason : "";
    $("kpi-wait").textContent = fmt(a.expected_wait_ms) + " / " + fmt(a.target_ms) + " ms";
    $("kpi-backlog").textContent = fmt(a.backlog);
    $("kpi-decided").textContent = fmt(s.decided_per_s, 1);
    $("kpi-p99").textContent = s.latency && s.latency.count ? fmt(s.latency.p99_ms) + " ms" : "–";
    const b = s.broker || {};
    $("kpi-broker").textContent = !b.connected ? "down" : b.blocked ? "BLOCKED" : "ok";
    $("updated").textContent = "updated " + new Date(s.at || Date.now()).toLocaleTimeString();
    // Shedding episodes: one entry per open → shedding change, timed by the snapshots' own
    // clock (a stream that opens replays the last minutes at once).
    const at = new Date(s.at || Date.now());
    const last = state.episodes[state.episodes.length - 1];
    if (a.state === "shedding" && (!last || last.end)) {
      state.episodes.push({ start: at, reason: a.reason, end: null, peakBacklog: a.backlog });
    } else if (a.state === "shedding" && last) {
      last.peakBacklog = Math.max(last.peakBacklog, a.backlog || 0);
    } else if (a.state === "open" && last && !last.end) {
      last.end = at;
    }
    const list = $("episodes");
    if (state.episodes.length) {
      list.replaceChildren(...state.episodes.slice(-8).map((e) => {
        const li = document.createElement("li");
        const took = e.end ? ((e.end - e.start) / 1000).toFixed(1) + " s" : "ongoing";
        li.appendChild(text(e.start.toLocaleTimeString() + " — " + (e.reason || "?") + ", " + took + ", backlog up to " + e.peakBacklog));
        return li;
      }));
    }
  }

  function rows(tbody, items, cells, empty) {
    if (!items.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 9; td.className = "muted"; td.appendChild(text(empty));
      tr.appendChild(td);
      tbody.replaceChildren(tr);
      return;
    }
    tbody.replaceChildren(...items.map((item) => {
      const tr = document.createElement("tr");
      for (const [value, cls] of cells(item)) {
        const td = document.createElement("td");
        if (cls) td.className = cls;
        td.appendChild(text(value));
        tr.appendChild(td);
      }
      return tr;
    }));
  }

  function tables(s) {
    rows($("queues").tBodies[0], s.queues || [], (q) => [
      [q.name], [fmt(q.ready)], [fmt(q.unacked)], [fmt(q.consumers)], [fmt(q.publish_rate, 1)],
      [fmt(q.deliver_rate, 1)], [fmt(q.ack_rate, 1)], [fmt(q.redeliver_rate, 1)], [fmt(q.dead_letters)],
    ], "no queue read yet");
    rows($("hot").tBodies[0], s.hot_skus || [], (h) => [
      [h.sku], [fmt(h.reservations_per_s, 1)], [fmt(h.available)], [fmt(h.on_hand)], [fmt(h.reserved)],
    ], "no orders in the last interval");
  }

  function onSnapshot(event) {
    let s;
    try { s = JSON.parse(event.data); } catch (_) { return; }
    state.snapshots += 1;
    state.last = s;
    push(s);
    header(s);
    tables(s);
  }

  // The browser reconnects a dropped stream by itself, but gives up for good on one the service
  // refused (503 when every stream slot is taken, or any other answer than the stream): this
  // opens a new one then, about one second later, then two, up to thirty — each wait between
  // half and all of that, so that tabs refused together do not all come back together.
  let retryMs = 1000;
  function connect() {
    const source = new EventSource("/v1/monitor/stream");
    source.addEventListener("snapshot", onSnapshot);
    source.onopen = () => { retryMs = 1000; };
    source.onerror = () => {
      $("role").textContent = "reconnecting…";
      $("role").className = "badge down";
      if (source.readyState === EventSource.CLOSED) {
        state.refused += 1;
        setTimeout(connect, retryMs * (0.5 + Math.random() / 2));
        retryMs = Math.min(retryMs * 2, 30000);
      }
    };
  }

  // Dead letters are admin data: fetched with the token the operator typed (kept in this tab).
  const token = $("token");
  token.value = sessionStorage.getItem("orderflow-admin-token") || "";
  token.addEventListener("change", () => { sessionStorage.setItem("orderflow-admin-token", token.value); deadLetters(); });
  async function deadLetters() {
    const table = $("dead-letters").tBodies[0];
    if (!token.value) { table.replaceChildren(); $("dl-status").textContent = "enter the admin token to see them"; return; }
    try {
      const r = await fetch("/v1/monitor/dead-letters", { headers: { Authorization: "Bearer " + token.value } });
      if (r.status === 401) { table.replaceChildren(); $("dl-status").textContent = "token refused"; return; }
      const body = await r.json();
      $("dl-status").textContent = body.data.length + " recent";
      rows($("dead-letters").tBodies[0], body.data, (d) => [
        [new Date(d.at).toLocaleTimeString()], [d.queue], [d.message_id || "–"], [d.reason, "reason"],
      ], "none");
    } catch (e) {
      $("dl-status").textContent = "could not load: " + e;
    }
  }
  setInterval(deadLetters, 3000);
  deadLetters();
  connect();
})();
