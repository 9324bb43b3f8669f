// The status page (GET /): fills index.html in from the log's JSON API, v1/log and
// v1/status (openapi.yaml). Text goes in with textContent only, never as HTML. URLs are
// relative, so the page also works under a path prefix behind a proxy.
"use strict";

(function () {
  const REFRESH_MS = 15000;
  const SVG = "http://www.w3.org/2000/svg";
  let clockOffsetMs = 0; // the log's clock minus ours, from v1/status "now"

  const byId = (id) => document.getElementById(id);

  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function link(href, text) {
    const a = el("a", text);
    a.href = href;
    return a;
  }

  function setText(id, text) {
    byId(id).textContent = String(text);
  }

  function fillTable(tbody, rows) {
    tbody.replaceChildren(...rows.map((cells) => {
      const tr = el("tr");
      for (const cell of cells) {
        const td = cell instanceof Node ? el("td") : el("td", cell);
        if (cell instanceof Node) td.append(cell);
        tr.append(td);
      }
      return tr;
    }));
  }

  // "12 s ago", "3 min ago", "5 h ago", "2 d ago"
  function ago(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return `${s} s ago`;
    if (s < 7200) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function when(iso) {
    return iso.replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  // Ages tick between refreshes, on the log's clock (not this browser's).
  function tickAges() {
    const now = Date.now() + clockOffsetMs;
    for (const e of document.querySelectorAll("[data-since]")) {
      e.textContent = ago((now - Date.parse(e.dataset.since)) / 1000);
    }
  }

  function ageSpan(iso) {
    const span = el("span", "", "age");
    span.dataset.since = iso;
    return span;
  }

  async function getJSON(path) {
    const resp = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      const why = body && body.error ? `${body.error.code}: ${body.error.message}` : resp.statusText;
      throw new Error(`${path}: ${resp.status} ${why}`);
    }
    return body;
  }

  function showLog(log) {
    setText("origin", log.origin);
    setText("log-origin", log.origin);
    setText("log-vkey", log.verifier_key);
    setText("log-pem", log.public_key);
    setText("cp-note", log.checkpoint);
    document.title = `${log.origin}: transparency log status`;
  }

  function showCheckpoint(status) {
    const cp = status.published;
    if (cp === null) {
      setText("cp-size", "none published yet");
      setText("cp-signed", status.witnessed ? "no checkpoint has a witness quorum yet" : "none");
      byId("cp-age").replaceChildren();
    } else {
      setText("cp-size", cp.tree_size.toLocaleString("en-US"));
      setText("cp-root", cp.root);
      setText("cp-signed", when(cp.signed_at));
      byId("cp-age").replaceChildren(ageSpan(cp.signed_at));
    }
    const signed = status.signed;
    if (signed === null) {
      setText("cp-newest", "none");
    } else if (cp !== null && signed.tree_size === cp.tree_size) {
      setText("cp-newest", `size ${signed.tree_size.toLocaleString("en-US")}, the same tree` +
        (status.witnessed ? " (published once a quorum of witnesses cosigned it)" : ""));
    } else {
      setText("cp-newest", `size ${signed.tree_size.toLocaleString("en-US")}, signed ${when(signed.signed_at)}` +
        " (not published yet: waiting for the witnesses)");
    }
  }

  function showAuthorities(status) {
    fillTable(byId("authorities").tBodies[0], status.authorities.map((a) => [
      a.name, a.role, a.algorithm, el("code", a.keyid),
    ]));
  }

  function showWitnesses(status) {
    const section = status.witnesses;
    const tbody = byId("witnesses").querySelector("tbody");
    if (section === null) {
      setText("witness-summary", "This log has no witness policy: its checkpoints are published without cosignatures.");
      fillTable(tbody, []);
      return;
    }
    const on = section.witnesses.filter((w) => w.on_published_checkpoint).length;
    setText("witness-summary", `${section.witnesses.length} witness(es), quorum "${section.quorum}"; ` +
      `${on} cosigned the published checkpoint.`);
    fillTable(tbody, section.witnesses.map((w) => {
      let last;
      if (w.last_cosigned === null) {
        last = el("span", "never (in the last 10,000 checkpoints)", "never");
      } else {
        last = el("span", `size ${w.last_cosigned.tree_size.toLocaleString("en-US")} at ` +
          `${when(w.last_cosigned.at)}, `);
        last.append(ageSpan(w.last_cosigned.at));
      }
      const name = el("span", w.name);
      name.title = w.verifier_key;
      return [name, last, el("span", w.on_published_checkpoint ? "yes" : "no", w.on_published_checkpoint ? "yes" : "no"),
        w.url === null ? "" : el("code", w.url)];
    }));
  }

  function showFleets(status) {
    const f = status.fleets;
    const shown = f.shown.length < f.count ? ` The ${f.shown.length} most recently updated:` : "";
    setText("fleet-summary", `${f.count} fleet(s), ${f.count - f.retired} active, ${f.retired} retired.${shown}`);
    fillTable(byId("fleets").querySelector("tbody"), f.shown.map((fleet) => {
      const path = `v1/fleets/${encodeURIComponent(fleet.fleet_id)}`;
      const proofs = el("span");
      proofs.append(link(path, "latest bundle and receipt"), " \u00b7 ", link(`${path}/head`, "fleet-head proof"));
      return [el("code", fleet.fleet_id), fleet.sequence.toLocaleString("en-US"),
        el("span", fleet.status, `status-${fleet.status}`), fleet.index.toLocaleString("en-US"), proofs];
    }));
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A step plot of the tree size against time: the size holds until the next checkpoint.
  function showPlot(status) {
    const points = status.tree_sizes.map((p) => ({ t: Date.parse(p.signed_at), n: p.tree_size }));
    const plot = byId("plot");
    if (points.length === 0) {
      plot.replaceChildren(el("p", "No checkpoint yet."));
      return;
    }
    const W = 640, H = 200, L = 64, R = 16, T = 12, B = 28;
    const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1);
    const nMax = Math.max(1, ...points.map((p) => p.n));
    const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
    const y = (n) => H - B - (H - T - B) * n / nMax;
    let d = `M${x(points[0].t).toFixed(1)},${y(points[0].n).toFixed(1)}`;
    for (const p of points.slice(1)) d += ` H${x(p.t).toFixed(1)} V${y(p.n).toFixed(1)}`;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `Tree size from ${points[0].n} to ${points[points.length - 1].n}` });
    chart.append(
      svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
      svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
      svg("text", { x: L - 6, y: y(nMax) + 4, "text-anchor": "end" }, nMax.toLocaleString("en-US")),
      svg("text", { x: L - 6, y: H - B + 4, "text-anchor": "end" }, "0"),
      svg("text", { x: L, y: H - 8 }, when(new Date(t0).toISOString())),
      svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, when(new Date(t1).toISOString())),
      svg("path", { class: "line", d }),
    );
    for (const p of points) {
      const dot = svg("circle", { class: "dot", cx: x(p.t).toFixed(1), cy: y(p.n).toFixed(1), r: 2.5 });
      dot.append(svg("title", {}, `size ${p.n} at ${when(new Date(p.t).toISOString())}`));
      chart.append(dot);
    }
    plot.replaceChildren(chart);
  }

  async function refresh() {
    const [log, status] = await Promise.allSettled([getJSON("v1/log"), getJSON("v1/status")]);
    const errors = [];
    if (log.status === "fulfilled") showLog(log.value); else errors.push(log.reason.message);
    if (status.status === "fulfilled") {
      const s = status.value;
      clockOffsetMs = Date.parse(s.now) - Date.now();
      setText("origin", s.origin);
      setText("log-origin", s.origin);
      setText("log-vkey", s.verifier_key);
      showCheckpoint(s);
      showAuthorities(s);
      showWitnesses(s);
      showFleets(s);
      showPlot(s);
      const size = s.published === null ? "no published checkpoint" : `tree size ${s.published.tree_size.toLocaleString("en-US")}`;
      setText("summary", `${size}; ${s.fleets.count} fleet(s). Updated ${when(s.now)}.`);
    } else {
      errors.push(status.reason.message);
    }
    tickAges();
    const box = byId("error");
    box.textContent = errors.length ? `Could not read the log: ${errors.join("; ")}` : "";
    box.hidden = errors.length === 0;
    document.body.dataset.state = errors.length ? "error" : "ready";
  }

  function start() {
    refresh();
    setInterval(refresh, REFRESH_MS);
    setInterval(tickAges, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
