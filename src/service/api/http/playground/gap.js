// The gap picture: a catalog's entries and their reverse-bridged embeddings in the two
// principal axes the server computed (GET /v1/catalogs/{c}/gap), with the query q and its
// bridged embedding B(q) projected into the same frame, and the ranked entries marked.
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 560, H = 400, PAD = { left: 40, right: 12, top: 12, bottom: 34 };
  const COLOURS = { entry: "#2f6db5", reverse: "#e08a1e", query: "#c62828", bridged: "#2e7d32" };

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function project(v, gap) {
    let x = 0, y = 0;
    for (let i = 0; i < v.length; i++) {
      const c = v[i] - gap.mean[i];
      x += c * gap.axes[0][i];
      y += c * gap.axes[1][i];
    }
    return [x, y];
  }

  function frame(points) {
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (const [x, y] of points) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    const pad = 0.05 * Math.max(x1 - x0, y1 - y0, 1e-6);
    [x0, x1, y0, y1] = [x0 - pad, x1 + pad, y0 - pad, y1 + pad];
    const sx = (W - PAD.left - PAD.right) / (x1 - x0);
    const sy = (H - PAD.top - PAD.bottom) / (y1 - y0);
    return ([x, y]) => [PAD.left + (x - x0) * sx, H - PAD.bottom - (y - y0) * sy];
  }

  function legend(svg, items) {
    items.forEach(([label, colour], i) => {
      const y = PAD.top + 10 + i * 16;
      svg.append(el("circle", { cx: PAD.left + 10, cy: y - 4, r: 5, fill: colour }));
      svg.append(el("text", { x: PAD.left + 20, y, class: "legend" }, label));
    });
  }

  // overlay: { modality, query (q), bridged (B(q) or null), ranked (ids, best first) }
  function draw(svg, note, gap, overlay) {
    const reverse = gap.reverse[overlay.modality] || [];
    const q = project(overlay.query, gap);
    const b = overlay.bridged ? project(overlay.bridged, gap) : null;
    const at = frame(gap.points.concat(reverse, [q], b ? [b] : []));
    const index = new Map(gap.ids.map((id, i) => [id, i]));
    svg.replaceChildren(el("rect", { x: 0, y: 0, width: W, height: H, class: "plot-bg" }));
    svg.append(el("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "axis" }));
    svg.append(el("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: "axis" }));
    svg.append(el("text", { x: W / 2, y: H - 10, class: "axis-label", "text-anchor": "middle" }, "principal axis 1"));
    svg.append(el("text", { x: 14, y: H / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 14 ${H / 2})` }, "principal axis 2"));
    const dots = (points, colour, cls) => {
      for (const p of points) {
        const [x, y] = at(p);
        svg.append(el("circle", { cx: x, cy: y, r: 2.6, fill: colour, class: cls }));
      }
    };
    dots(gap.points, COLOURS.entry, "entry");
    dots(reverse, COLOURS.reverse, "reverse");
    // The ranked entries, numbered, each joined to its reverse-bridged embedding.
    overlay.ranked.forEach((id, rank) => {
      const i = index.get(id);
      if (i === undefined) return;
      const [x, y] = at(gap.points[i]);
      if (reverse[i]) {
        const [rx, ry] = at(reverse[i]);
        svg.append(el("line", { x1: x, y1: y, x2: rx, y2: ry, class: "link" }));
      }
      svg.append(el("circle", { cx: x, cy: y, r: 5.5, class: "ranked" }));
      svg.append(el("text", { x: x + 7, y: y - 5, class: "rank" }, String(rank + 1)));
    });
    const [qx, qy] = at(q);
    if (b) {
      const [bx, by] = at(b);
      svg.append(el("line", { x1: qx, y1: qy, x2: bx, y2: by, class: "bridge" }));
      svg.append(el("rect", { x: bx - 6, y: by - 6, width: 12, height: 12, fill: COLOURS.bridged, transform: `rotate(45 ${bx} ${by})`, class: "bridged-query" }));
    }
    svg.append(el("circle", { cx: qx, cy: qy, r: 7, fill: COLOURS.query, class: "query" }));
    const items = [[`${gap.modality} entries (${gap.points.length})`, COLOURS.entry]];
    if (reverse.length) items.push([`entries bridged into ${overlay.modality}, B(a)`, COLOURS.reverse]);
    items.push([`query q (${overlay.modality})`, COLOURS.query]);
    if (b) items.push([`bridged query B(q) (${gap.modality})`, COLOURS.bridged]);
    legend(svg, items);

    const drawn = gap.points.length < gap.entries ? `${gap.points.length} of ${gap.entries}` : `all ${gap.entries}`;
    const distance = gap.mean_distance[overlay.modality];
    note.textContent =
      `Catalog ${gap.catalog} (model ${gap.model}): ${drawn} entries` +
      (reverse.length ? ` and the same entries bridged into ${overlay.modality}` : "") +
      `, in the two principal axes of all of them (which show ${(100 * gap.explained).toFixed(0)}% of their variance).` +
      (distance !== undefined ? ` The means of the two clouds are ${distance.toFixed(3)} apart in the full space.` : "") +
      " The ranked entries are numbered, each joined to its bridged point; q is the query's embedding (POST /v1/embed)" +
      (b ? ", B(q) the query bridged with the model's defaults (POST /v1/bridge)." : ".");
  }

  window.diffgapGap = { draw };
})();
