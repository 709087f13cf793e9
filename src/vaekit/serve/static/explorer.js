// vaekit explorer: the latent map, live decoding, interpolation, traversals, samples, drawing.
// Plain JavaScript, no dependencies. The server does all model work through /api/*;
// this file keeps the view state and draws.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const MARGIN = { left: 46, right: 12, top: 12, bottom: 36 };
  const STRIP_STEPS = 10;

  const S = {
    info: null,
    D: 0,
    codes: [],          // test point codes (posterior means), arrays of length D
    labels: null,
    proj: [],           // [u, v] of every test point in the current view
    mode: "dims", dx: 0, dy: 1,
    bounds: { x0: -3, x1: 3, y0: -3, y1: 3 },
    z: [],              // the marker: the latent vector the sliders show
    label: 0,           // class for a conditional model
    hover: null,        // [u, v] under the pointer
    source: "at the marker",
    gridOn: false, gridN: 16, grid: null, gridKey: "",
    contoursOn: true, prior: null, priorKey: "",
    pointsOn: true,
    picks: [],          // test point indices for the interpolation
    strip: null,        // what the strip shows: {kind: "interp"|"traversal", ...}
    samples: [],
    encoded: null,
    codeIndices: null,  // a discrete posterior: the code indices of every test point
    codeGrid: null,     // the code grid in the editor (one index per position)
    codePos: null,      // the position being edited
  };

  // -- helpers -----------------------------------------------------------------------------

  function colorOf(label) {
    if (label == null) return "#4b5563";
    if (label < PALETTE.length) return PALETTE[label];
    return `hsl(${(label * 137.508) % 360}, 62%, 48%)`;
  }

  async function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
    const r = await fetch(path, opts);
    let data;
    try { data = await r.json(); } catch (e) { data = { error: `${r.status} ${r.statusText}` }; }
    if (!r.ok) throw new Error(data.error || `request failed (${r.status})`);
    return data;
  }

  function withLabel(body) {
    if (S.info && S.info.num_classes > 0) body.label = S.label;
    return body;
  }

  let toastTimer = 0;
  function toast(message) {
    const t = $("toast");
    t.textContent = message;
    t.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove("show"), 5000);
  }

  function debounce(fn, ms) {
    let id = 0;
    return (...args) => { clearTimeout(id); id = setTimeout(() => fn(...args), ms); };
  }

  const fmt = (v) => (Math.abs(v) < 1e-9 ? 0 : v).toFixed(2);

  function el(tag, attrs = {}, children = []) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.appendChild(c);
    return e;
  }

  // -- the view: a plane z(u, v) = origin + u a1 + v a2 through the marker --------------------

  function axes() {
    if (S.mode === "pca") return S.info.pca.components;
    const a1 = new Array(S.D).fill(0), a2 = new Array(S.D).fill(0);
    a1[S.dx] = 1;
    if (S.D > 1) a2[S.dy] = 1;
    return [a1, a2];
  }

  function project(z) {
    if (S.mode === "pca") {
      const m = S.info.pca.mean, [c1, c2] = S.info.pca.components;
      let u = 0, v = 0;
      for (let k = 0; k < S.D; k++) { const d = z[k] - m[k]; u += d * c1[k]; v += d * c2[k]; }
      return [u, v];
    }
    return [z[S.dx], S.D > 1 ? z[S.dy] : 0];
  }

  function plane() {
    const [a1, a2] = axes();
    const [u, v] = project(S.z);
    // The marker's own offsets off the plane are held: that is what the sliders control.
    const origin = S.z.map((zk, k) => zk - u * a1[k] - v * a2[k]);
    return { origin, axes: [a1, a2] };
  }

  function toLatent(u, v) {
    const p = plane();
    const [a1, a2] = p.axes;
    return p.origin.map((o, k) => o + u * a1[k] + v * a2[k]);
  }

  function reproject() {
    S.proj = S.codes.map((z, i) => {
      const p = project(z);
      // One latent dimension: spread the points vertically so they can be told apart.
      if (S.D === 1) p[1] = ((i * 0.6180339887) % 1) * 2 - 1;
      return p;
    });
  }

  // -- canvas geometry -------------------------------------------------------------------------

  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  let cssW = 600, cssH = 600;

  function plotW() { return cssW - MARGIN.left - MARGIN.right; }
  function plotH() { return cssH - MARGIN.top - MARGIN.bottom; }
  function toPx(u, v) {
    const b = S.bounds;
    return [MARGIN.left + ((u - b.x0) / (b.x1 - b.x0)) * plotW(),
            MARGIN.top + ((b.y1 - v) / (b.y1 - b.y0)) * plotH()];
  }
  function fromPx(x, y) {
    const b = S.bounds;
    return [b.x0 + ((x - MARGIN.left) / plotW()) * (b.x1 - b.x0),
            b.y1 - ((y - MARGIN.top) / plotH()) * (b.y1 - b.y0)];
  }

  function resize() {
    const r = canvas.getBoundingClientRect();
    if (r.width < 10) return;
    const dpr = window.devicePixelRatio || 1;
    cssW = r.width; cssH = r.height;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    squareBounds();
    draw();
  }

  function squareBounds() {
    // Equal units on both axes, so that distances on the map are distances in the plane.
    const b = S.bounds;
    const cx = (b.x0 + b.x1) / 2, cy = (b.y0 + b.y1) / 2;
    const perPx = Math.max((b.x1 - b.x0) / plotW(), (b.y1 - b.y0) / plotH());
    S.bounds = { x0: cx - perPx * plotW() / 2, x1: cx + perPx * plotW() / 2,
                 y0: cy - perPx * plotH() / 2, y1: cy + perPx * plotH() / 2 };
  }

  function quantile(sorted, q) {
    if (!sorted.length) return 0;
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
  }

  function fitView() {
    let x0, x1, y0, y1;
    if (S.proj.length) {
      const us = S.proj.map((p) => p[0]).sort((a, b) => a - b);
      const vs = S.proj.map((p) => p[1]).sort((a, b) => a - b);
      x0 = quantile(us, 0.005); x1 = quantile(us, 0.995);
      y0 = quantile(vs, 0.005); y1 = quantile(vs, 0.995);
    } else {
      x0 = y0 = -3; x1 = y1 = 3;
    }
    if (S.info.has_prior && S.mode === "dims") {
      // Keep the prior's bulk in view: it is where samples come from.
      x0 = Math.min(x0, -2.5); x1 = Math.max(x1, 2.5); y0 = Math.min(y0, -2.5); y1 = Math.max(y1, 2.5);
    }
    const px = 0.08 * (x1 - x0 || 1), py = 0.08 * (y1 - y0 || 1);
    S.bounds = { x0: x0 - px, x1: x1 + px, y0: y0 - py, y1: y1 + py };
    squareBounds();
    viewChanged();
  }

  // -- drawing ---------------------------------------------------------------------------------

  function niceStep(span, target) {
    const raw = span / target;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
  }

  function axisNames() {
    if (S.mode === "pca") {
      const e = S.info.pca.explained;
      return [`PC1 (${Math.round(100 * e[0])}% of variance)`, `PC2 (${Math.round(100 * e[1])}%)`];
    }
    return [`z${S.dx}`, S.D > 1 ? `z${S.dy}` : "(spread)"];
  }

  function drawAxes() {
    const b = S.bounds;
    ctx.save();
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6b7280";
    ctx.strokeStyle = "#eceef4";
    ctx.lineWidth = 1;
    const sx = niceStep(b.x1 - b.x0, 7), sy = niceStep(b.y1 - b.y0, 7);
    const dec = (s) => Math.max(0, -Math.floor(Math.log10(s) + 1e-9));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let u = Math.ceil(b.x0 / sx) * sx; u <= b.x1; u += sx) {
      const [x] = toPx(u, 0);
      ctx.fillText(u.toFixed(dec(sx)), x, MARGIN.top + plotH() + 5);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = Math.ceil(b.y0 / sy) * sy; v <= b.y1; v += sy) {
      const [, y] = toPx(0, v);
      ctx.fillText(v.toFixed(dec(sy)), MARGIN.left - 6, y);
    }
    const [nx, ny] = axisNames();
    ctx.fillStyle = "#374151";
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillText(nx, MARGIN.left + plotW() / 2, cssH - 2);
    ctx.save();
    ctx.translate(12, MARGIN.top + plotH() / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText(ny, 0, 0);
    ctx.restore();
    ctx.strokeStyle = "#c9cedb";
    ctx.strokeRect(MARGIN.left + 0.5, MARGIN.top + 0.5, plotW(), plotH());
    ctx.restore();
  }

  function drawGridLines() {
    const b = S.bounds;
    ctx.save();
    ctx.strokeStyle = "#eef0f5";
    ctx.lineWidth = 1;
    const sx = niceStep(b.x1 - b.x0, 7), sy = niceStep(b.y1 - b.y0, 7);
    ctx.beginPath();
    for (let u = Math.ceil(b.x0 / sx) * sx; u <= b.x1; u += sx) {
      const [x] = toPx(u, 0);
      ctx.moveTo(Math.round(x) + 0.5, MARGIN.top); ctx.lineTo(Math.round(x) + 0.5, MARGIN.top + plotH());
    }
    for (let v = Math.ceil(b.y0 / sy) * sy; v <= b.y1; v += sy) {
      const [, y] = toPx(0, v);
      ctx.moveTo(MARGIN.left, Math.round(y) + 0.5); ctx.lineTo(MARGIN.left + plotW(), Math.round(y) + 0.5);
    }
    ctx.stroke();
    ctx.restore();
  }

  // Marching squares over the prior's log-density grid (cell centres, rows top to bottom).
  const CASES = [[], [["L", "B"]], [["B", "R"]], [["L", "R"]], [["T", "R"]], [["T", "R"], ["L", "B"]],
    [["T", "B"]], [["T", "L"]], [["T", "L"]], [["T", "B"]], [["T", "L"], ["B", "R"]], [["T", "R"]],
    [["L", "R"]], [["B", "R"]], [["L", "B"]], []];

  function contour(grid, level, bounds) {
    const n = grid.length;
    const [x0, x1, y0, y1] = bounds;
    const du = (x1 - x0) / n, dv = (y1 - y0) / n;
    const U = (i) => x0 + (i + 0.5) * du, V = (j) => y1 - (j + 0.5) * dv;
    const segs = [];
    for (let j = 0; j < n - 1; j++) {
      for (let i = 0; i < n - 1; i++) {
        const a = grid[j][i], b = grid[j][i + 1], c = grid[j + 1][i + 1], d = grid[j + 1][i];
        const idx = (a > level) * 8 + (b > level) * 4 + (c > level) * 2 + (d > level);
        if (idx === 0 || idx === 15) continue;
        const t = (f1, f2) => (level - f1) / (f2 - f1);
        const pt = {
          T: () => [U(i) + t(a, b) * du, V(j)],
          R: () => [U(i + 1), V(j) - t(b, c) * dv],
          B: () => [U(i) + t(d, c) * du, V(j + 1)],
          L: () => [U(i), V(j) - t(a, d) * dv],
        };
        for (const [e1, e2] of CASES[idx]) segs.push([pt[e1](), pt[e2]()]);
      }
    }
    return segs;
  }

  function drawContours() {
    const p = S.prior;
    if (!p) return;
    ctx.save();
    ctx.setLineDash([5, 4]);
    // Dark lines on the white map, light ones over the (dark) decoded grid.
    const rgb = S.gridOn && S.grid ? "251,191,36" : "30,27,75";
    const styles = [`rgba(${rgb},0.85)`, `rgba(${rgb},0.6)`, `rgba(${rgb},0.4)`];
    p.levels.forEach((level, k) => {
      ctx.strokeStyle = styles[k] || styles[styles.length - 1];
      ctx.lineWidth = k === 0 ? 1.6 : 1.2;
      ctx.beginPath();
      for (const [[u1, v1], [u2, v2]] of contour(p.logp, level, p.bounds)) {
        const [xa, ya] = toPx(u1, v1), [xb, yb] = toPx(u2, v2);
        ctx.moveTo(xa, ya); ctx.lineTo(xb, yb);
      }
      ctx.stroke();
    });
    ctx.restore();
  }

  function star(x, y, r) {
    ctx.beginPath();
    for (let k = 0; k < 10; k++) {
      const rad = k % 2 ? r * 0.45 : r, a = -Math.PI / 2 + (k * Math.PI) / 5;
      ctx.lineTo(x + rad * Math.cos(a), y + rad * Math.sin(a));
    }
    ctx.closePath();
  }

  function draw() {
    ctx.clearRect(0, 0, cssW, cssH);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, cssW, cssH);
    ctx.save();
    ctx.beginPath();
    ctx.rect(MARGIN.left, MARGIN.top, plotW(), plotH());
    ctx.clip();
    drawGridLines();

    if (S.gridOn && S.grid) {
      const [gx0, gx1, gy0, gy1] = S.grid.bounds;
      const [xa, ya] = toPx(gx0, gy1), [xb, yb] = toPx(gx1, gy0);
      // Smooth a mild enlargement; keep the pixels of tiny pictures (8x8 digits) sharp.
      ctx.imageSmoothingEnabled = (xb - xa) / S.grid.img.naturalWidth < 2.5;
      ctx.drawImage(S.grid.img, xa, ya, xb - xa, yb - ya);
      ctx.imageSmoothingEnabled = true;
    }
    if (S.contoursOn && S.info.has_prior) drawContours();

    if (S.pointsOn) {
      const r = S.gridOn ? 2.3 : 2.6;
      ctx.globalAlpha = S.gridOn ? 0.75 : 0.8;
      // Over the dark grid a thin white rim keeps the points readable.
      ctx.strokeStyle = "rgba(255,255,255,0.7)";
      ctx.lineWidth = 0.8;
      const groups = new Map();
      S.proj.forEach((p, i) => {
        const key = S.labels ? S.labels[i] : null;
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push(p);
      });
      for (const [key, pts] of groups) {
        ctx.fillStyle = colorOf(key);
        ctx.beginPath();
        for (const [u, v] of pts) {
          const [x, y] = toPx(u, v);
          ctx.moveTo(x + r, y);
          ctx.arc(x, y, r, 0, 2 * Math.PI);
        }
        ctx.fill();
        if (S.gridOn) ctx.stroke();
      }
      ctx.globalAlpha = 1;
    }

    // The interpolation: its two ends and the straight line between them.
    if (S.picks.length) {
      const pts = S.picks.map((i) => toPx(...S.proj[i]));
      if (pts.length === 2) {
        // Dark on a white rim: visible on the white map and on the dark grid alike.
        ctx.setLineDash([]);
        for (const [color, width] of [["rgba(255,255,255,0.9)", 4.5], ["#111827", 2]]) {
          ctx.strokeStyle = color;
          ctx.lineWidth = width;
          ctx.beginPath(); ctx.moveTo(...pts[0]); ctx.lineTo(...pts[1]); ctx.stroke();
        }
      }
      pts.forEach(([x, y], k) => {
        ctx.fillStyle = "#fff"; ctx.strokeStyle = "#111827"; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
        ctx.fillStyle = "#111827"; ctx.font = "bold 10px system-ui, sans-serif";
        ctx.textAlign = "center"; ctx.textBaseline = "middle";
        ctx.fillText(k ? "B" : "A", x, y + 0.5);
      });
    }

    for (const z of S.samples) {
      const [x, y] = toPx(...project(z));
      star(x, y, 6.5);
      ctx.fillStyle = "#fbbf24"; ctx.strokeStyle = "#78350f"; ctx.lineWidth = 1;
      ctx.fill(); ctx.stroke();
    }

    if (S.encoded) {
      const [u, v] = project(S.encoded.z);
      const [x, y] = toPx(u, v);
      if (S.mode === "dims" && S.info.kind === "vae" && S.D > 1) {
        // One posterior standard deviation around the code of the drawing.
        const sx = (S.encoded.std[S.dx] / (S.bounds.x1 - S.bounds.x0)) * plotW();
        const sy = (S.encoded.std[S.dy] / (S.bounds.y1 - S.bounds.y0)) * plotH();
        ctx.strokeStyle = "rgba(190,24,93,0.8)"; ctx.lineWidth = 1.5; ctx.setLineDash([3, 3]);
        ctx.beginPath(); ctx.ellipse(x, y, Math.max(sx, 1), Math.max(sy, 1), 0, 0, 2 * Math.PI); ctx.stroke();
        ctx.setLineDash([]);
      }
      ctx.fillStyle = "#be185d"; ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(x, y - 8); ctx.lineTo(x + 7, y); ctx.lineTo(x, y + 8); ctx.lineTo(x - 7, y);
      ctx.closePath(); ctx.fill(); ctx.stroke();
    }

    // The marker: the latent vector the sliders show.
    const [mx, my] = toPx(...project(S.z));
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 4.5;
    ctx.beginPath(); ctx.arc(mx, my, 9, 0, 2 * Math.PI); ctx.stroke();
    ctx.strokeStyle = "#4338ca"; ctx.lineWidth = 2.2;
    ctx.beginPath(); ctx.arc(mx, my, 9, 0, 2 * Math.PI);
    ctx.moveTo(mx - 14, my); ctx.lineTo(mx - 4, my); ctx.moveTo(mx + 4, my); ctx.lineTo(mx + 14, my);
    ctx.moveTo(mx, my - 14); ctx.lineTo(mx, my - 4); ctx.moveTo(mx, my + 4); ctx.lineTo(mx, my + 14);
    ctx.stroke();

    if (S.hover) {
      const [hx, hy] = toPx(...S.hover);
      ctx.strokeStyle = "rgba(17,24,39,0.35)"; ctx.lineWidth = 1; ctx.setLineDash([2, 3]);
      ctx.beginPath();
      ctx.moveTo(hx, MARGIN.top); ctx.lineTo(hx, MARGIN.top + plotH());
      ctx.moveTo(MARGIN.left, hy); ctx.lineTo(MARGIN.left + plotW(), hy);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.restore();
    drawAxes();
  }

  // -- live decoding: latest request wins, at most one in flight -------------------------------

  const dec = { busy: false, next: null, times: [] };

  function requestDecode(z, source) {
    dec.next = { z: z.slice(), source };
    if (!dec.busy) pumpDecode();
  }

  async function pumpDecode() {
    dec.busy = true;
    while (dec.next) {
      const { z, source } = dec.next;
      dec.next = null;
      const t0 = performance.now();
      try {
        const r = await api("/api/decode", withLabel({ z }));
        $("decoded").src = r.images[0];
        showZ(z, source);
        const ms = performance.now() - t0;
        dec.times.push(ms);
        if (dec.times.length > 20) dec.times.shift();
        const sorted = dec.times.slice().sort((a, b) => a - b);
        $("latency").textContent = `decode ${ms.toFixed(0)} ms (median ${quantile(sorted, 0.5).toFixed(0)})`;
      } catch (e) {
        toast(e.message);
      }
    }
    dec.busy = false;
  }

  function showZ(z, source) {
    // A long z (a grid of code vectors) is shown by its first values.
    const shown = z.length > 16 ? `${z.slice(0, 8).map(fmt).join(", ")}, … ${z.length} values` : z.map(fmt).join(", ");
    $("zreadout").textContent = `(${shown})`;
    $("decoded-source").textContent = source;
  }

  // -- the marker and the sliders --------------------------------------------------------------

  function setZ(z, source = "at the marker") {
    S.z = z.slice();
    S.source = source;
    syncSliders();
    requestDecode(S.z, source);
    planeMaybeChanged();
    draw();
  }

  function syncSliders() {
    S.z.forEach((v, k) => {
      const input = $(`slider-${k}`);
      if (!input) return;
      input.value = String(v);
      $(`slider-val-${k}`).textContent = fmt(v);
    });
  }

  function buildSliders() {
    const box = $("sliders");
    box.textContent = "";
    S.info.slider_range.forEach(([lo, hi], k) => {
      const input = el("input", {
        type: "range", id: `slider-${k}`, min: String(lo), max: String(hi),
        step: String((hi - lo) / 400), value: String(S.z[k]), "aria-label": `latent dimension z${k}`,
      });
      input.addEventListener("input", () => {
        S.z[k] = parseFloat(input.value);
        $(`slider-val-${k}`).textContent = fmt(S.z[k]);
        S.source = `z${k} moved`;
        requestDecode(S.z, S.source);
        planeMaybeChanged();
        draw();
      });
      const trav = el("button", { type: "button", title: `traversal of z${k}: decode it from ${lo} to ${hi}`, text: "⇆" });
      trav.addEventListener("click", () => showTraversal(k));
      box.appendChild(el("div", { class: "slider-row" }, [
        el("span", { class: "name", id: `slider-name-${k}`, text: `z${k}` }),
        input,
        el("span", { class: "val", id: `slider-val-${k}`, text: fmt(S.z[k]) }),
        trav,
      ]));
    });
    markShownDims();
  }

  function markShownDims() {
    for (let k = 0; k < S.D; k++) {
      const name = $(`slider-name-${k}`);
      if (name) name.classList.toggle("shown", S.mode === "dims" && (k === S.dx || k === S.dy));
    }
  }

  // -- the grid and the prior's contours -------------------------------------------------------

  function viewKey() {
    const b = S.bounds;
    return JSON.stringify([S.mode, S.dx, S.dy, b.x0, b.x1, b.y0, b.y1]);
  }

  function planeMaybeChanged() {
    if (!S.gridOn) return;
    const key = JSON.stringify([viewKey(), plane().origin.map((v) => v.toFixed(4)), S.gridN, S.label]);
    if (key !== S.gridKey) scheduleGrid();
  }

  async function refreshGrid() {
    if (!S.gridOn) { canvas.dataset.grid = "off"; return; }
    const p = plane();
    const b = S.bounds;
    const bounds = [b.x0, b.x1, b.y0, b.y1];
    const key = JSON.stringify([viewKey(), p.origin.map((v) => v.toFixed(4)), S.gridN, S.label]);
    S.gridKey = key;
    canvas.dataset.grid = "loading";
    try {
      const r = await api("/api/grid", withLabel({ plane: p, bounds, n: S.gridN }));
      if (key !== S.gridKey) return;  // a newer view is on its way
      const img = new Image();
      img.onload = () => {
        if (key !== S.gridKey) return;
        S.grid = { img, bounds: r.bounds };
        canvas.dataset.grid = "loaded";
        draw();
      };
      img.src = r.image;
    } catch (e) {
      toast(e.message);
      canvas.dataset.grid = "error";
    }
  }
  const scheduleGrid = debounce(refreshGrid, 120);

  async function refreshPrior() {
    if (!S.contoursOn || !S.info.has_prior || S.D < 2) { canvas.dataset.prior = "off"; return; }
    const b = S.bounds;
    // A margin beyond the view, so that contours do not stop short of the edges while panning.
    const mx = 0.25 * (b.x1 - b.x0), my = 0.25 * (b.y1 - b.y0);
    const bounds = [b.x0 - mx, b.x1 + mx, b.y0 - my, b.y1 + my];
    const key = viewKey();
    S.priorKey = key;
    try {
      const r = await api("/api/prior", { plane: plane(), bounds, n: 72 });
      if (key !== S.priorKey) return;
      S.prior = r;
      canvas.dataset.prior = "loaded";
      draw();
    } catch (e) {
      toast(e.message);
    }
  }
  const schedulePrior = debounce(refreshPrior, 150);

  function viewChanged() {
    draw();
    if (S.gridOn) scheduleGrid();
    if (S.contoursOn) schedulePrior();
  }

  // -- the strip: interpolation between two test points, or a traversal -----------------------

  function figure(src, caption, cls = "") {
    return el("figure", { class: cls }, [el("img", { src, alt: caption }), el("figcaption", { text: caption })]);
  }

  function labelName(i) {
    if (!S.labels) return `#${i}`;
    return S.info.class_names[S.labels[i]] ?? String(S.labels[i]);
  }

  async function showInterpolation() {
    const [a, b] = S.picks;
    S.strip = { kind: "interp" };
    $("strip-title").textContent = "Interpolation";
    $("strip-title").appendChild(el("span", { class: "muted", text: `  test point A (${labelName(a)}) → B (${labelName(b)}), decoded along the straight line` }));
    const box = $("strip");
    try {
      const r = await api("/api/interpolate", withLabel({ a, b, steps: STRIP_STEPS }));
      box.textContent = "";
      box.appendChild(figure(r.ends[0], "A", "end"));
      r.images.forEach((src, k) => box.appendChild(figure(src, `t=${(k / (r.images.length - 1)).toFixed(2)}`)));
      box.appendChild(figure(r.ends[1], "B", "end"));
      box.dataset.kind = "interp";
    } catch (e) {
      toast(e.message);
    }
  }

  async function showTraversal(k) {
    const [lo, hi] = S.info.slider_range[k];
    const za = S.z.slice(), zb = S.z.slice();
    za[k] = lo; zb[k] = hi;
    S.strip = { kind: "traversal", k };
    $("strip-title").textContent = "Traversal";
    $("strip-title").appendChild(el("span", { class: "muted", text: `  z${k} from ${fmt(lo)} to ${fmt(hi)}, the other dimensions held at the marker` }));
    const box = $("strip");
    try {
      const r = await api("/api/interpolate", withLabel({ a: za, b: zb, steps: 11 }));
      box.textContent = "";
      r.images.forEach((src, i) => box.appendChild(figure(src, `z${k}=${fmt(r.z[i][k])}`)));
      box.dataset.kind = "traversal";
    } catch (e) {
      toast(e.message);
    }
  }

  function refreshStrip() {
    if (!S.strip) return;
    if (S.strip.kind === "interp" && S.picks.length === 2) showInterpolation();
    else if (S.strip.kind === "traversal") showTraversal(S.strip.k);
  }

  function pick(i) {
    S.picks = S.picks.length >= 2 ? [i] : S.picks.concat([i]);
    if (S.picks.length === 2 && S.picks[0] === S.picks[1]) S.picks = [i];
    setZ(S.codes[i], `test point #${i} (${labelName(i)})`);
    if (S.codeIndices) showCodes(S.codeIndices[i], `test point #${i}`);
    if (S.picks.length === 2) showInterpolation();
    else {
      $("strip-title").textContent = "Interpolation";
      $("strip").textContent = "";
      $("strip").appendChild(el("p", { class: "empty", text: `A is test point #${i} (${labelName(i)}); now click a second point.` }));
    }
  }

  // -- map interaction -------------------------------------------------------------------------

  function nearestPoint(x, y, radius = 6) {
    if (!S.pointsOn) return -1;
    let best = -1, bestD = radius * radius;
    S.proj.forEach(([u, v], i) => {
      const [px, py] = toPx(u, v);
      const d = (px - x) ** 2 + (py - y) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    });
    return best;
  }

  function inPlot(x, y) {
    return x >= MARGIN.left && x <= MARGIN.left + plotW() && y >= MARGIN.top && y <= MARGIN.top + plotH();
  }

  let drag = null;
  function localXY(e) {
    const r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (!S.info) return;
    const [x, y] = localXY(e);
    drag = { x, y, b: { ...S.bounds }, moved: false };
    canvas.setPointerCapture(e.pointerId);
  });

  canvas.addEventListener("pointermove", (e) => {
    if (!S.info) return;
    const [x, y] = localXY(e);
    if (drag) {
      const dx = x - drag.x, dy = y - drag.y;
      if (!drag.moved && dx * dx + dy * dy < 16) return;
      drag.moved = true;
      canvas.classList.add("panning");
      const b = drag.b;
      const su = (b.x1 - b.x0) / plotW(), sv = (b.y1 - b.y0) / plotH();
      S.bounds = { x0: b.x0 - dx * su, x1: b.x1 - dx * su, y0: b.y0 + dy * sv, y1: b.y1 + dy * sv };
      S.hover = null;
      draw();
      return;
    }
    if (!inPlot(x, y)) { leaveMap(); return; }
    S.hover = fromPx(x, y);
    requestDecode(toLatent(...S.hover), "at the pointer");
    draw();
  });

  canvas.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const [x, y] = localXY(e);
    const moved = drag.moved;
    drag = null;
    canvas.classList.remove("panning");
    if (moved) { viewChanged(); return; }
    if (!inPlot(x, y)) return;
    // Shift-click always pins, even on top of a test point.
    const i = e.shiftKey ? -1 : nearestPoint(x, y);
    if (i >= 0) pick(i);
    else setZ(toLatent(...fromPx(x, y)), "pinned marker");
  });

  function leaveMap() {
    if (!S.hover) return;
    S.hover = null;
    requestDecode(S.z, S.source);
    draw();
  }
  canvas.addEventListener("pointerleave", () => { if (!drag) leaveMap(); });

  canvas.addEventListener("wheel", (e) => {
    if (!S.info) return;
    e.preventDefault();
    const [x, y] = localXY(e);
    const [u, v] = fromPx(x, y);
    const f = Math.pow(1.0015, e.deltaY);
    const b = S.bounds;
    S.bounds = { x0: u + (b.x0 - u) * f, x1: u + (b.x1 - u) * f, y0: v + (b.y0 - v) * f, y1: v + (b.y1 - v) * f };
    draw();
    debouncedViewChanged();
  }, { passive: false });
  const debouncedViewChanged = debounce(viewChanged, 150);

  canvas.addEventListener("dblclick", () => fitView());

  // -- toolbar ---------------------------------------------------------------------------------

  function setView() {
    S.mode = $("view-mode").value;
    S.dx = parseInt($("dim-x").value || "0", 10);
    S.dy = parseInt($("dim-y").value || "1", 10);
    $("dims-pick").hidden = S.mode !== "dims";
    S.prior = null;
    S.grid = null;
    reproject();
    markShownDims();
    fitView();
  }

  function buildToolbar() {
    const D = S.D;
    if (D > 2) {
      $("view-group").hidden = false;
      $("view-mode").value = "pca";
    } else {
      $("view-mode").value = "dims";
    }
    if (D > 1) {
      for (let k = 0; k < D; k++) {
        $("dim-x").appendChild(el("option", { value: String(k), text: `z${k}` }));
        $("dim-y").appendChild(el("option", { value: String(k), text: `z${k}` }));
      }
      $("dim-x").value = "0";
      $("dim-y").value = "1";
    }
    $("dims-pick").hidden = D <= 2 || $("view-mode").value !== "dims";
    $("view-mode").addEventListener("change", setView);
    $("dim-x").addEventListener("change", setView);
    $("dim-y").addEventListener("change", setView);

    $("grid-on").addEventListener("change", () => {
      S.gridOn = $("grid-on").checked;
      if (!S.gridOn) { S.grid = null; canvas.dataset.grid = "off"; draw(); } else refreshGrid();
    });
    $("grid-n").max = String(S.info.limits.grid_max);
    $("grid-n").addEventListener("input", () => {
      S.gridN = parseInt($("grid-n").value, 10);
      $("grid-n-val").textContent = `${S.gridN}×${S.gridN}`;
      if (S.gridOn) scheduleGrid();
    });
    // Codes have a prior over codes, with no density on a plane: no contours.
    if (!S.info.has_prior || D < 2 || S.info.codes) {
      $("contours-toggle").hidden = true;
      S.contoursOn = false;
    }
    $("contours-on").addEventListener("change", () => {
      S.contoursOn = $("contours-on").checked;
      if (S.contoursOn) refreshPrior(); else { canvas.dataset.prior = "off"; draw(); }
    });
    $("points-on").addEventListener("change", () => { S.pointsOn = $("points-on").checked; draw(); });
    $("fit-view").addEventListener("click", fitView);
    $("reset-z").addEventListener("click", () => setZ(S.info.z_default, "at the marker (reset)"));
  }

  function buildLegend() {
    const box = $("legend");
    box.textContent = "";
    if (S.labels) {
      const counts = new Map();
      S.labels.forEach((l) => counts.set(l, (counts.get(l) || 0) + 1));
      [...counts.keys()].sort((a, b) => a - b).forEach((l) => {
        const dot = el("span", { class: "dot" });
        dot.style.background = colorOf(l);
        box.appendChild(el("span", { class: "item", title: `${counts.get(l)} test points` }, [
          dot, el("span", { text: S.info.class_names[l] ?? String(l) }),
        ]));
      });
      box.appendChild(el("span", { class: "sep" }));
    }
    const sym = (s, cls, text) => el("span", { class: "item" }, [el("span", { class: `sym ${cls}`, text: s }), el("span", { text })]);
    box.appendChild(sym("⊕", "", "marker"));
    box.appendChild(sym("★", "", "sample"));
    if (S.info.is_image) box.appendChild(sym("◆", "", "your picture"));
    if (S.info.has_prior && S.D >= 2 && !S.info.codes) box.appendChild(sym("┄", "", "prior: 50 / 90 / 99% of mass"));
  }

  function buildHeader() {
    const info = S.info;
    $("run-title").textContent = info.run;
    $("run-description").textContent = info.description || "";
    document.title = `${info.run} · vaekit explorer`;
    const kind = info.kind === "autoencoder" ? "plain autoencoder"
      : info.num_classes > 0 ? "conditional VAE" : "VAE";
    const badges = [
      [kind, "badge kind"],
      [info.layer ? `${info.latent_dim}-D top layer` : `${info.latent_dim}-D latent`, "badge"],
      [`${info.dataset} · ${info.data_shape.join("×")}`, "badge"],
      [`${info.likelihood} likelihood`, "badge"],
      [`${info.points} test points`, "badge"],
    ];
    for (const [text, cls] of badges) $("badges").appendChild(el("span", { class: cls, text }));
    // A hierarchy is explored through its top layer: say so where the badges are.
    if (info.layer) $("badges").appendChild(el("span", { class: "badge", title: info.layer, text: "layers below at their prior means" }));
  }

  // -- class selector ---------------------------------------------------------------------------

  function buildClasses() {
    if (!(S.info.num_classes > 0)) return;
    $("class-card").hidden = false;
    const box = $("classes");
    for (let k = 0; k < S.info.num_classes; k++) {
      const chip = el("button", {
        type: "button", class: "chip", role: "radio", "aria-checked": String(k === S.label),
        id: `class-${k}`, text: S.info.class_names[k] ?? String(k),
      });
      chip.addEventListener("click", () => setLabel(k));
      box.appendChild(chip);
    }
  }

  function setLabel(k) {
    S.label = k;
    document.querySelectorAll("#classes .chip").forEach((c) => c.setAttribute("aria-checked", String(c.id === `class-${k}`)));
    requestDecode(S.hover ? toLatent(...S.hover) : S.z, S.source);
    if (S.gridOn) scheduleGrid();
    refreshStrip();
    if (S.samples.length) redecodeSamples();
    if (lastUpload) encodePicture(lastUpload);
  }

  async function redecodeSamples() {
    // The same codes in the new class: what the class alone changes.
    try {
      const r = await api("/api/decode", withLabel({ z: S.samples }));
      document.querySelectorAll("#samples img").forEach((img, i) => { img.src = r.images[i]; });
    } catch (e) {
      toast(e.message);
    }
  }

  // -- the code editor (discrete latents): click a position, pick a code, see the decoding ------

  function codeColour(c) {
    return `hsl(${(c * 137.508) % 360}, 60%, ${c % 2 ? 80 : 70}%)`;
  }

  function buildCodes() {
    const info = S.info.codes;
    if (!info) return;
    $("codes-card").hidden = false;
    const grid = $("codegrid");
    grid.style.gridTemplateColumns = `repeat(${info.grid[1]}, minmax(0, 1fr))`;
    for (let p = 0; p < info.positions; p++) {
      const row = Math.floor(p / info.grid[1]), col = p % info.grid[1];
      const b = el("button", {
        type: "button", id: `code-cell-${p}`, class: "code-cell",
        title: `position (${row}, ${col})`, "aria-label": `code at position (${row}, ${col})`,
      });
      b.addEventListener("click", () => selectPosition(p));
      grid.appendChild(b);
    }
    const box = $("code-pick");
    for (let c = 0; c < info.codes; c++) box.appendChild(el("option", { value: String(c), text: String(c) }));
    box.addEventListener("change", () => setCode(S.codePos, parseInt(box.value, 10)));
    if (S.codeIndices && S.codeIndices.length) showCodes(S.codeIndices[0], "test point #0");
  }

  function showCodes(codes, source, move = false) {
    S.codeGrid = codes.slice();
    $("codes-source").textContent = source;
    S.codeGrid.forEach((c, p) => {
      const b = $(`code-cell-${p}`);
      b.textContent = String(c);
      b.style.background = codeColour(c);
    });
    if (S.codePos != null) $("code-pick").value = String(S.codeGrid[S.codePos]);
    decodeCodes(source, move);
  }

  function selectPosition(p) {
    S.codePos = p;
    document.querySelectorAll(".code-cell").forEach((b, i) => b.classList.toggle("selected", i === p));
    const cols = S.info.codes.grid[1];
    $("code-pos").textContent = `(${Math.floor(p / cols)}, ${p % cols})`;
    const box = $("code-pick");
    box.disabled = false;
    box.value = String(S.codeGrid[p]);
    box.focus();
  }

  function setCode(p, c) {
    if (p == null || !S.codeGrid) return;
    const grid = S.codeGrid.slice();
    grid[p] = c;
    showCodes(grid, "edited codes", true);
  }

  async function decodeCodes(source, move) {
    try {
      const r = await api("/api/codes", withLabel({ codes: S.codeGrid }));
      $("code-decoded").src = r.images[0];
      if (move) setZ(r.z[0], source);
    } catch (e) {
      toast(e.message);
    }
  }

  // -- samples ----------------------------------------------------------------------------------

  // The prior, and the post-hoc samplers fitted to the run's codes (vaekit fit-sampler).
  function buildSamplers(info) {
    const select = $("sampler-select");
    for (const s of info.samplers || [{ name: "prior", label: "prior" }]) {
      const text = s.name === "prior" ? "prior p(z)" : s.label === s.name ? s.name : `${s.name} (${s.label})`;
      select.appendChild(el("option", { value: s.name, text }));
    }
    select.hidden = select.options.length < 2;
    // With a choice to make, the choice itself says where samples come from.
    $("sample-from").hidden = !select.hidden;
    const note = () => {
      const prior = select.value === "prior" || !select.value;
      // A plain autoencoder has no prior of its own: show what N(0, I) gives, and say so.
      const ae = info.kind === "autoencoder" && prior;
      $("sample-note").textContent = ae
        ? "This autoencoder was trained without a prior: these codes come from N(0, I), which it never saw." +
          (select.hidden ? " Fit a sampler to its codes (vaekit fit-sampler RUN --sampler gmm) to generate." : " Pick a fitted sampler above.")
        : "";
      $("sample-note").hidden = !ae;
    };
    select.addEventListener("change", () => { note(); drawSamples(); });
    note();
  }

  async function drawSamples() {
    try {
      const sampler = $("sampler-select").value || "prior";
      const r = await api("/api/sample", withLabel({ n: 16, sampler }));
      S.samples = r.z;
      const box = $("samples");
      box.textContent = "";
      r.images.forEach((src, i) => {
        const img = el("img", { src, alt: `sample ${i + 1}`, title: "click: move the marker here" });
        img.addEventListener("click", () => {
          setZ(r.z[i], `${sampler} sample ${i + 1}`);
          if (r.codes) showCodes(r.codes[i], `${sampler} sample ${i + 1}`);
        });
        box.appendChild(img);
      });
      draw();
    } catch (e) {
      toast(e.message);
    }
  }

  // -- draw or upload ---------------------------------------------------------------------------

  const pad = $("draw");
  const pctx = pad.getContext("2d");
  let lastUpload = null;
  let stroke = null;

  function clearPad() {
    pctx.fillStyle = "#000";
    pctx.fillRect(0, 0, pad.width, pad.height);
  }

  function padXY(e) {
    const r = pad.getBoundingClientRect();
    return [((e.clientX - r.left) / r.width) * pad.width, ((e.clientY - r.top) / r.height) * pad.height];
  }

  pad.addEventListener("pointerdown", (e) => {
    pad.setPointerCapture(e.pointerId);
    stroke = padXY(e);
    pctx.strokeStyle = "#fff";
    pctx.fillStyle = "#fff";
    pctx.lineWidth = 13;
    pctx.lineCap = "round";
    pctx.lineJoin = "round";
    pctx.beginPath();
    pctx.arc(stroke[0], stroke[1], 6.5, 0, 2 * Math.PI);
    pctx.fill();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!stroke) return;
    const p = padXY(e);
    pctx.beginPath(); pctx.moveTo(...stroke); pctx.lineTo(...p); pctx.stroke();
    stroke = p;
  });
  pad.addEventListener("pointerup", () => {
    if (!stroke) return;
    stroke = null;
    lastUpload = pad.toDataURL("image/png");
    encodePicture(lastUpload);
  });

  async function encodePicture(dataUrl) {
    try {
      const r = await api("/api/encode", withLabel({ image: dataUrl, fit: $("fit-on").checked }));
      $("enc-input").src = r.input;
      $("enc-recon").src = r.reconstruction;
      S.encoded = { z: r.z, std: r.std };
      const sd = S.info.kind === "vae" ? `, posterior sd (${r.std.map(fmt).join(", ")})` : "";
      $("enc-info").textContent = `Lands at z = (${r.z.map(fmt).join(", ")})${sd}${r.inverted ? "; colours inverted to match the training data" : ""}.`;
      setZ(r.z, "your picture");
      if (r.codes) showCodes(r.codes, "your picture");
    } catch (e) {
      toast(e.message);
    }
  }

  function setupDrawing() {
    if (!S.info.is_image) return;
    $("draw-card").hidden = false;
    clearPad();
    $("draw-clear").addEventListener("click", () => {
      clearPad();
      lastUpload = null;
      S.encoded = null;
      $("enc-input").removeAttribute("src");
      $("enc-recon").removeAttribute("src");
      $("enc-info").textContent = "Draw with the mouse; the picture is encoded when you lift the pen.";
      draw();
    });
    $("fit-on").addEventListener("change", () => { if (lastUpload) encodePicture(lastUpload); });
    $("upload").addEventListener("change", () => {
      const file = $("upload").files[0];
      $("upload").value = "";
      if (!file) return;
      if (!["image/png", "image/jpeg"].includes(file.type)) { toast(`${file.name}: upload a PNG or JPEG picture`); return; }
      if (file.size > S.info.limits.max_upload_bytes) {
        toast(`${file.name} is larger than ${(S.info.limits.max_upload_bytes / 1048576).toFixed(0)} MB`);
        return;
      }
      const reader = new FileReader();
      reader.onload = () => {
        lastUpload = reader.result;
        const img = new Image();
        img.onload = () => {
          // Show the upload on the pad, fitted inside it, so that one can draw over it.
          clearPad();
          const s = Math.min(pad.width / img.width, pad.height / img.height);
          pctx.drawImage(img, (pad.width - img.width * s) / 2, (pad.height - img.height * s) / 2, img.width * s, img.height * s);
        };
        img.src = reader.result;
        encodePicture(reader.result);
      };
      reader.readAsDataURL(file);
    });
  }

  // -- start -------------------------------------------------------------------------------------

  async function start() {
    try {
      const [info, points] = await Promise.all([api("/api/info"), api("/api/points")]);
      S.info = info;
      S.D = info.latent_dim;
      S.codes = points.z;
      S.labels = points.labels;
      S.codeIndices = points.codes;
      S.z = info.z_default.slice();
      S.mode = S.D > 2 ? "pca" : "dims";
      S.dy = S.D > 1 ? 1 : 0;
      buildSamplers(info);
      buildHeader();
      buildToolbar();
      // A slider over one coordinate of a code vector means nothing: codes get an editor.
      if (info.codes) $("sliders-card").hidden = true;
      else buildSliders();
      buildCodes();
      buildClasses();
      buildLegend();
      setupDrawing();
      $("sample-btn").addEventListener("click", drawSamples);
      reproject();
      resize();
      fitView();
      requestDecode(S.z, "at the marker");
      new ResizeObserver(() => resize()).observe($("map-wrap"));
      canvas.dataset.ready = "1";
    } catch (e) {
      toast(`could not start: ${e.message}`);
      $("run-title").textContent = "could not load the run";
    }
  }

  // A small handle for the browser tests (and for the curious in the console).
  window.vaekitExplorer = {
    state: S,
    pointToPixel: (i) => toPx(...S.proj[i]),
    latentToPixel: (z) => toPx(...project(z)),
  };

  start();
})();
