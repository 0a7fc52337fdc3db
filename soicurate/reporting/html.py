"""Self-contained HTML: the interactive data map and the pieces of the audit report.

Everything a page needs is inside it: inline CSS, inline PNGs (data: URIs), the map's data as
inline JSON and a small canvas renderer in vanilla JavaScript. No script, font or style comes
from a CDN, and every page carries a Content-Security-Policy that forbids any request (the
browser would refuse one and log an error), so a report opens the same offline, from an
e-mail attachment or from a CI artifact.

    from soicurate.reporting.html import write_datamap_html
    write_datamap_html(profile_df, "map.html", thresholds=meta["region_thresholds"])
"""

from __future__ import annotations

import base64
import html as _html
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from soicurate.profiling.regions import REGIONS
from soicurate.profiling.soi import CATEGORIES
from soicurate.reporting.datamap import CATEGORY_COLORS

DEFAULT_MAP_POINTS = 20_000
TEXT_CHARS = 240  # text shown in the map's tooltips, per example
NUMERIC = ("int", "float", "pct", "right", "g")  # right-aligned table columns
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'none'; base-uri 'none'"


def esc(value) -> str:
    return _html.escape("" if value is None else str(value), quote=True)


def png_img(data: bytes, alt: str, *, width: int | None = None) -> str:
    """An <img> with the PNG inline as a data: URI."""
    w = f' style="max-width:{width}px"' if width else ""
    return f'<img alt="{esc(alt)}"{w} src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def fmt_value(v, kind: str | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "\u2013"
    if kind == "pct":
        return pct(v)
    if kind == "g":
        return f"{v:.3g}" if isinstance(v, float) else f"{v:,}"
    if kind == "int" or isinstance(v, (bool, np.bool_)):
        return str(v) if isinstance(v, (bool, np.bool_)) else f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, int):
        return str(v) if kind == "id" else f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def pct(share: float, count: int | None = None) -> str:
    """A share as a percentage; '<1%' for a non-zero share that rounds to 0."""
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "\u2013"
    if 0 < share < 0.005 and (count is None or count > 0):
        return "<1%"
    return f"{share:.0%}"


def table(
    rows: Sequence[dict],
    columns: Sequence[tuple[str, str]] | Sequence[tuple[str, str, str | None]],
    *,
    total: int | None = None,
    more_note: str = "",
    css_class: str = "",
    raw: Sequence[str] = (),
) -> str:
    """An HTML table of `rows` (dicts); `columns` are (key, heading[, kind]).

    `total` is the number of rows there would be without a cap: when larger than len(rows) a
    footer says how many more there are (and where to find them: `more_note`). Columns named
    in `raw` hold HTML already.
    """
    cols = [(c[0], c[1], c[2] if len(c) > 2 else None) for c in columns]
    out = [f'<table class="{esc(css_class)}"><thead><tr>']
    out += [f'<th class="{"num" if kind in NUMERIC else ""}">{esc(head)}</th>' for _, head, kind in cols]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for key, _, kind in cols:
            v = row.get(key)
            cls = "num" if kind in NUMERIC else ("text" if kind == "text" else "")
            cell = v if key in raw else esc(fmt_value(v, kind))
            out.append(f'<td class="{cls}">{cell}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    if total is not None and total > len(rows):
        out.append(f'<p class="more">{total - len(rows):,} more not shown ({total:,} in all){esc(more_note)}</p>')
    return "".join(out)


def share_bar(counts: Sequence[int], names: Sequence[str] = CATEGORIES) -> str:
    """A horizontal stacked bar of category shares (HTML/CSS, hover titles give the numbers)."""
    total = int(sum(counts))
    if total == 0:
        return '<div class="bar empty"></div>'
    segs = []
    for name, c in zip(names, counts):
        if c:
            share = c / total
            segs.append(
                f'<span style="width:{share * 100:.3f}%;background:{CATEGORY_COLORS.get(name, "#999")}" '
                f'title="{esc(name)}: {int(c):,} ({share:.1%})"></span>'
            )
    return f'<div class="bar">{"".join(segs)}</div>'


def category_legend() -> str:
    items = "".join(
        f'<span class="key"><i style="background:{CATEGORY_COLORS[c]}"></i>{esc(c.replace("_", " "))}</span>'
        for c in CATEGORIES
    )
    return f'<div class="legend">{items}</div>'


def heat_table(matrix: np.ndarray, row_names: Sequence[str], col_names: Sequence[str], *, corner: str = "") -> str:
    """A matrix as an HTML table with cells shaded by their row share (count and share shown)."""
    totals = matrix.sum(axis=1)
    out = [f'<table class="heat"><thead><tr><th>{esc(corner)}</th>']
    out += [f"<th>{esc(c.replace('_', ' '))}</th>" for c in col_names]
    out.append('<th class="num">total</th></tr></thead><tbody>')
    for i, r in enumerate(row_names):
        out.append(f"<tr><th>{esc(r.replace('_', ' '))}</th>")
        for j in range(len(col_names)):
            n = int(matrix[i, j])
            s = n / totals[i] if totals[i] else 0.0
            bg = f"rgba(33,102,172,{0.08 + 0.85 * s:.3f})" if totals[i] else "transparent"
            fg = "#fff" if s > 0.55 else "#111"
            bold = ' style="font-weight:600"' if i == j else ""
            out.append(
                f'<td class="num" style="background:{bg};color:{fg}"><span{bold}>{pct(s, n) if totals[i] else "&ndash;"}'
                f"</span><br><small>{n:,}</small></td>"
            )
        out.append(f'<td class="num">{int(totals[i]):,}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


# -- the interactive data map ------------------------------------------------------------------
def map_data(
    df,
    *,
    thresholds: dict | None = None,
    max_points: int = DEFAULT_MAP_POINTS,
    texts=None,
    issues=None,
    label_names: Sequence[str] | None = None,
    max_issues: int = 500,
    seed: int = 0,
) -> dict:
    """The JSON the map script draws: a uniform sample of at most `max_points` examples.

    `texts` is an optional polars DataFrame (example_id, text); `issues` the LabelIssues
    scores DataFrame (is_label_issue, predicted_label_id, issue_score): its top `max_issues`
    flagged examples are always shown, ringed, on top of the uniform sample.
    """
    import polars as pl

    n_total = df.height
    cols = ["example_id", "confidence", "variability", "category", "region"] + (
        ["label"] if "label" in df.columns else []
    )
    base = df.select(cols)
    if n_total > max_points:
        sample = base.sample(n=max_points, seed=seed)
        sampled = True
    else:
        sample, sampled = base, False
    n_forced = 0
    if issues is not None:
        flagged = issues.filter(pl.col("is_label_issue")).head(max_issues)
        extra = flagged.select("example_id").join(sample.select("example_id"), on="example_id", how="anti")
        if extra.height:
            sample = pl.concat([sample, base.join(extra, on="example_id", how="semi")])
            n_forced = extra.height
        info = issues.select("example_id", "is_label_issue", "predicted_label_id", "issue_score")
        sample = sample.join(info, on="example_id", how="left")
    if texts is not None:
        sample = sample.join(
            texts.select("example_id", pl.col("text").cast(pl.String).str.slice(0, TEXT_CHARS)),
            on="example_id",
            how="left",
        )
    conf = np.nan_to_num(sample["confidence"].to_numpy(), nan=0.0)
    var = np.nan_to_num(sample["variability"].to_numpy(), nan=0.0)
    t = thresholds or {}
    v_thr, c_thr = t.get("variability"), t.get("confidence")
    finite = lambda v: v is not None and isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    all_var = df["variability"].drop_nans().drop_nulls()
    x_max = max(float(all_var.max()) * 1.05 if all_var.len() else 0.5, (v_thr * 1.1) if finite(v_thr) else 0.0, 0.05)
    cat_counts = np.bincount(df["category"].to_physical().to_numpy().astype(np.int64), minlength=len(CATEGORIES))
    data = {
        "n_total": n_total,
        "n_shown": sample.height,
        "n_forced": n_forced,
        "sampled": sampled,
        "max_points": max_points,
        "seed": seed,
        "xmax": x_max,
        "thr": {
            "v": v_thr if finite(v_thr) else None,
            "c": c_thr if finite(c_thr) else None,
            "mode": t.get("mode"),
            "fraction": t.get("fraction"),
        },  # fmt: skip
        "cats": list(CATEGORIES),
        "colors": [CATEGORY_COLORS[c] for c in CATEGORIES],
        "cat_counts": cat_counts.tolist(),
        "regions": list(REGIONS),
        "labels": list(label_names or []),
        "x": np.round(np.clip(var / x_max, 0, 1) * 10000).astype(np.int64).tolist(),
        "y": np.round(np.clip(conf, 0, 1) * 10000).astype(np.int64).tolist(),
        "c": sample["category"].to_physical().to_numpy().astype(np.int64).tolist(),
        "r": sample["region"].to_physical().to_numpy().astype(np.int64).tolist(),
        "id": [str(i) for i in sample["example_id"].to_list()],  # strings: 63-bit ids exceed JS integers
    }
    if "label" in sample.columns:
        data["l"] = sample["label"].fill_null(-1).to_list()
    if "is_label_issue" in sample.columns:
        data["f"] = sample["is_label_issue"].fill_null(False).cast(pl.Int8).to_list()
        data["p"] = sample["predicted_label_id"].fill_null(-1).to_list()
        data["s"] = np.round(sample["issue_score"].fill_null(0.0).to_numpy() * 1000).astype(np.int64).tolist()
    if "text" in sample.columns:
        data["t"] = sample["text"].to_list()
    return data


_MAP_SCRIPT = r"""
(function () {
  "use strict";
  if (window.SoiMap) { return; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function niceStep(span, ticks) {
    var raw = span / ticks, mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  }
  function SoiMap(root) {
    var self = this;
    this.root = root;
    this.d = JSON.parse(root.querySelector("script.soimap-data").textContent);
    this.canvas = root.querySelector("canvas.soimap-main");
    this.overlay = root.querySelector("canvas.soimap-overlay");
    this.tip = root.querySelector(".soimap-tip");
    this.hidden = {};
    this.issuesOnly = false;
    this.pinned = -1;
    this.current = -1;
    this.m = {l: 64, r: 18, t: 16, b: 50};
    this.buildControls();
    this.resize();
    window.addEventListener("resize", function () { self.resize(); });
    this.overlay.addEventListener("mousemove", function (ev) { self.hover(ev); });
    this.overlay.addEventListener("mouseleave", function () { if (self.pinned < 0) { self.show(-1); } });
    this.overlay.addEventListener("click", function (ev) {
      var i = self.nearest(ev);
      self.pinned = i;
      self.show(i);
    });
  }
  SoiMap.prototype.buildControls = function () {
    var self = this, d = this.d, box = this.root.querySelector(".soimap-controls");
    d.cats.forEach(function (name, k) {
      var b = el("button", "soimap-key");
      b.type = "button";
      var sw = el("i");
      sw.style.background = d.colors[k];
      b.appendChild(sw);
      b.appendChild(document.createTextNode(name.replace(/_/g, " ") + " (" + d.cat_counts[k].toLocaleString("en-US") + ")"));
      b.title = "show or hide " + name;
      b.addEventListener("click", function () {
        self.hidden[k] = !self.hidden[k];
        b.classList.toggle("off", !!self.hidden[k]);
        self.draw();
      });
      box.appendChild(b);
    });
    if (d.f) {
      var lab = el("label", "soimap-opt"), cb = el("input");
      cb.type = "checkbox";
      cb.addEventListener("change", function () { self.issuesOnly = cb.checked; self.draw(); });
      lab.appendChild(cb);
      lab.appendChild(document.createTextNode(" likely label issues only (ringed)"));
      box.appendChild(lab);
    }
    var find = el("input", "soimap-find");
    find.type = "search";
    find.placeholder = "find example id";
    var note = el("span", "soimap-note");
    find.addEventListener("change", function () {
      var q = find.value.trim(), i = d.id.indexOf(q);
      self.pinned = i;
      self.show(i);
      note.textContent = q && i < 0 ? "not among the points shown" : "";
    });
    box.appendChild(find);
    box.appendChild(note);
  };
  SoiMap.prototype.resize = function () {
    var w = Math.max(320, Math.floor(this.root.querySelector(".soimap-plot").clientWidth));
    var h = Math.round(Math.min(640, Math.max(300, w * 0.62)));
    var r = window.devicePixelRatio || 1;
    [this.canvas, this.overlay].forEach(function (c) {
      c.width = Math.round(w * r); c.height = Math.round(h * r);
      c.style.width = w + "px"; c.style.height = h + "px";
    });
    this.w = w; this.h = h; this.ratio = r;
    var d = this.d, m = this.m, W = w - m.l - m.r, H = h - m.t - m.b, n = d.x.length;
    this.px = new Float32Array(n); this.py = new Float32Array(n);
    for (var i = 0; i < n; i++) {
      this.px[i] = m.l + d.x[i] / 10000 * W;
      this.py[i] = m.t + (1.02 - d.y[i] / 10000) / 1.04 * H;
    }
    this.draw();
    if (this.current >= 0) { this.show(this.current); }
  };
  SoiMap.prototype.X = function (v) { return this.m.l + v / this.d.xmax * (this.w - this.m.l - this.m.r); };
  SoiMap.prototype.Y = function (c) { return this.m.t + (1.02 - c) / 1.04 * (this.h - this.m.t - this.m.b); };
  SoiMap.prototype.visible = function (i) {
    return !this.hidden[this.d.c[i]] && (!this.issuesOnly || (this.d.f && this.d.f[i] === 1));
  };
  SoiMap.prototype.radius = function () {
    return Math.min(4, Math.max(1.6, Math.sqrt(24000 / Math.max(this.d.x.length, 1))));
  };
  SoiMap.prototype.draw = function () {
    var d = this.d, ctx = this.canvas.getContext("2d"), m = this.m, w = this.w, h = this.h, self = this;
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
    ctx.font = "12px system-ui, sans-serif"; ctx.fillStyle = "#333"; ctx.strokeStyle = "#e3e3e3"; ctx.lineWidth = 1;
    var step = niceStep(d.xmax, 6), v, c;
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (v = 0; v <= d.xmax + 1e-12; v += step) {
      var x = Math.round(this.X(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, m.t); ctx.lineTo(x, h - m.b); ctx.stroke();
      ctx.fillText(v.toFixed(step < 0.01 ? 3 : 2), x, h - m.b + 5);
    }
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (c = 0; c <= 1.0001; c += 0.2) {
      var y = Math.round(this.Y(c)) + 0.5;
      ctx.beginPath(); ctx.moveTo(m.l, y); ctx.lineTo(w - m.r, y); ctx.stroke();
      ctx.fillText(c.toFixed(1), m.l - 6, y);
    }
    ctx.strokeStyle = "#888"; ctx.strokeRect(m.l + 0.5, m.t + 0.5, w - m.l - m.r, h - m.t - m.b);
    ctx.textAlign = "center"; ctx.textBaseline = "bottom"; ctx.fillStyle = "#222";
    ctx.fillText("variability (std of the gold-label probability across epochs)", (m.l + w - m.r) / 2, h - 6);
    ctx.save(); ctx.translate(16, (m.t + h - m.b) / 2); ctx.rotate(-Math.PI / 2); ctx.textBaseline = "middle";
    ctx.fillText("confidence (mean gold-label probability)", 0, 0); ctx.restore();
    var r = this.radius(), n = d.x.length;
    ctx.save();
    ctx.beginPath(); ctx.rect(m.l, m.t, w - m.l - m.r, h - m.t - m.b); ctx.clip();
    ctx.globalAlpha = Math.min(0.85, Math.max(0.35, 9000 / Math.max(n, 1)));
    for (var k = 0; k < d.cats.length; k++) {
      if (this.hidden[k]) { continue; }
      ctx.fillStyle = d.colors[k];
      ctx.beginPath();
      for (var i = 0; i < n; i++) {
        if (d.c[i] !== k || !this.visible(i)) { continue; }
        ctx.moveTo(this.px[i] + r, this.py[i]);
        ctx.arc(this.px[i], this.py[i], r, 0, 2 * Math.PI);
      }
      ctx.fill();
    }
    if (d.f) {
      var flagged = 0;
      for (var q = 0; q < n; q++) { if (d.f[q] === 1 && this.visible(q)) { flagged++; } }
      // many rings would hide the colours: fade them as their number grows
      ctx.globalAlpha = this.issuesOnly ? 0.9 : Math.min(0.9, Math.max(0.22, 500 / Math.max(flagged, 1)));
      ctx.strokeStyle = "#111"; ctx.lineWidth = flagged > 1500 && !this.issuesOnly ? 0.7 : 1.1; ctx.beginPath();
      for (var j = 0; j < n; j++) {
        if (d.f[j] !== 1 || !this.visible(j)) { continue; }
        ctx.moveTo(this.px[j] + r + 1.5, this.py[j]);
        ctx.arc(this.px[j], this.py[j], r + 1.5, 0, 2 * Math.PI);
      }
      ctx.stroke();
    }
    ctx.restore();
    ctx.globalAlpha = 1; ctx.setLineDash([6, 4]); ctx.strokeStyle = "#333"; ctx.lineWidth = 1.2;
    ctx.font = "bold 12px system-ui, sans-serif"; ctx.fillStyle = "#222";
    var vx = d.thr.v !== null ? this.X(d.thr.v) : w - m.r;
    if (d.thr.v !== null) {
      ctx.beginPath(); ctx.moveTo(vx, m.t); ctx.lineTo(vx, h - m.b); ctx.stroke();
      ctx.textAlign = "left"; ctx.textBaseline = "top";
      ctx.fillStyle = "rgba(255,255,255,0.8)"; ctx.fillRect(vx + 4, m.t + 4, ctx.measureText("ambiguous \u2192").width + 6, 17);
      ctx.fillStyle = "#222"; ctx.fillText("ambiguous \u2192", vx + 7, m.t + 6);
    }
    if (d.thr.c !== null) {
      var cy = this.Y(d.thr.c);
      ctx.beginPath(); ctx.moveTo(m.l, cy); ctx.lineTo(vx, cy); ctx.stroke();
      ctx.textAlign = "left"; ctx.fillStyle = "#222";
      ctx.textBaseline = "top"; ctx.fillText("hard-to-learn", m.l + 8, cy + 5);
      ctx.textBaseline = "bottom"; ctx.fillText("easy-to-learn", m.l + 8, cy - 5);
    }
    ctx.setLineDash([]);
    this.root.setAttribute("data-drawn", String(n));
  };
  SoiMap.prototype.nearest = function (ev) {
    var b = this.overlay.getBoundingClientRect(), mx = ev.clientX - b.left, my = ev.clientY - b.top;
    var best = -1, bd = Math.pow(Math.max(7, this.radius() + 4), 2), n = this.d.x.length;
    for (var i = 0; i < n; i++) {
      var dx = this.px[i] - mx, dy = this.py[i] - my, dd = dx * dx + dy * dy;
      if (dd < bd && this.visible(i)) { bd = dd; best = i; }
    }
    return best;
  };
  SoiMap.prototype.hover = function (ev) {
    if (this.pinned >= 0) { return; }
    var self = this;
    if (this.raf) { return; }
    this.raf = window.requestAnimationFrame(function () { self.raf = 0; self.show(self.nearest(ev)); });
  };
  SoiMap.prototype.label = function (k) {
    return k >= 0 && k < this.d.labels.length ? this.d.labels[k] : (k >= 0 ? String(k) : "\u2013");
  };
  SoiMap.prototype.show = function (i) {
    var ctx = this.overlay.getContext("2d"), d = this.d, tip = this.tip;
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.clearRect(0, 0, this.w, this.h);
    this.current = i;
    this.root.setAttribute("data-shown", i >= 0 ? d.id[i] : "");
    if (i < 0) { tip.style.display = "none"; return; }
    var x = this.px[i], y = this.py[i], r = this.radius();
    ctx.lineWidth = 2; ctx.strokeStyle = "#000"; ctx.fillStyle = d.colors[d.c[i]];
    ctx.beginPath(); ctx.arc(x, y, r + 3, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    tip.textContent = "";
    tip.appendChild(el("b", "", "example " + d.id[i]));
    if (d.l) { tip.appendChild(el("div", "", "label: " + this.label(d.l[i]))); }
    tip.appendChild(el("div", "", "category: " + d.cats[d.c[i]].replace(/_/g, " ") + " \u00b7 region: " + d.regions[d.r[i]].replace(/_/g, " ")));
    tip.appendChild(el("div", "", "confidence " + (d.y[i] / 10000).toFixed(3) + " \u00b7 variability " + (d.x[i] / 10000 * d.xmax).toFixed(3)));
    if (d.f && d.f[i] === 1) {
      tip.appendChild(el("div", "warn", "likely label issue (score " + (d.s[i] / 1000).toFixed(2) + "): model predicts " + this.label(d.p[i])));
    }
    if (d.t && d.t[i]) { tip.appendChild(el("div", "txt", d.t[i])); }
    tip.style.display = "block";
    var left = x + 14, top = y + 14;
    if (left + tip.offsetWidth > this.w) { left = Math.max(0, x - 14 - tip.offsetWidth); }
    if (top + tip.offsetHeight > this.h) { top = Math.max(0, y - 14 - tip.offsetHeight); }
    tip.style.left = left + "px"; tip.style.top = top + "px";
  };
  SoiMap.prototype.pointPixel = function (i) { return {x: this.px[i], y: this.py[i]}; };
  window.SoiMap = SoiMap;
  window.soiMaps = [];
  function start() {
    document.querySelectorAll(".soimap").forEach(function (root) { window.soiMaps.push(new SoiMap(root)); });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
"""

MAP_CSS = """
.soimap{position:relative;margin:8px 0 4px}
.soimap-controls{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin-bottom:6px;font-size:13px}
.soimap-key{border:1px solid #ccc;background:#fff;border-radius:4px;padding:3px 8px;cursor:pointer;font:inherit}
.soimap-key i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:-1px}
.soimap-key.off{opacity:.35;text-decoration:line-through}
.soimap-opt{margin-left:6px}
.soimap-find{margin-left:auto;padding:3px 6px;font:inherit;width:150px}
.soimap-note{color:#a33}
.soimap-plot{position:relative;width:100%}
.soimap-plot canvas{position:absolute;left:0;top:0}
.soimap-plot canvas.soimap-main{position:relative}
.soimap-tip{display:none;position:absolute;z-index:5;max-width:360px;background:#fff;border:1px solid #999;
 border-radius:4px;padding:6px 8px;font-size:12px;line-height:1.35;box-shadow:0 2px 8px rgba(0,0,0,.18);pointer-events:none}
.soimap-tip .txt{margin-top:4px;font-style:italic;color:#333;white-space:pre-wrap;overflow-wrap:anywhere}
.soimap-tip .warn{color:#b00020}
.soimap-caption{font-size:12px;color:#555}
"""


def datamap_fragment(data: dict, *, dom_id: str = "soimap") -> str:
    """The map's HTML (controls, two canvases, tooltip, inline data); needs map_script()."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    n, total = data["n_shown"], data["n_total"]
    if data["sampled"]:
        what = (f"{n - data['n_forced']:,} of {total:,} examples shown: a uniform random sample (seed {data['seed']}), "
                f"capped at {data['max_points']:,} points so the page stays small")  # fmt: skip
        if data["n_forced"]:
            what += f", plus the {data['n_forced']:,} top-ranked likely label issues not in the sample"
    else:
        what = f"all {total:,} examples shown"
    t = data["thr"]
    if t.get("v") is not None and t.get("c") is not None:
        rule = f"ambiguous: variability \u2265 {t['v']:.4f}; hard-to-learn: confidence < {t['c']:.4f}"
        if t.get("mode") == "quantile" and t.get("fraction"):
            rule += f" (quantile thresholds, fraction {t['fraction']:.3f})"
        elif t.get("mode"):
            rule += f" ({t['mode']} thresholds)"
    else:
        rule = "no region thresholds in the profile's metadata"
    return (
        f'<div class="soimap" id="{esc(dom_id)}">'
        f'<div class="soimap-controls"></div>'
        f'<div class="soimap-plot"><canvas class="soimap-main"></canvas><canvas class="soimap-overlay"></canvas>'
        f'<div class="soimap-tip"></div></div>'
        f'<p class="soimap-caption">{esc(what)}. Region boundaries (dashed): {esc(rule)}. '
        f"Hover a point for its example; click to pin it; click a category to hide it.</p>"
        f'<script type="application/json" class="soimap-data">{payload}</script></div>'
    )


def map_script() -> str:
    return f"<script>{_MAP_SCRIPT}</script>"


BASE_CSS = """
*{box-sizing:border-box}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1a1a1a;margin:0;background:#f6f6f4}
main{max-width:1120px;margin:0 auto;padding:20px 28px 60px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:34px 0 8px;padding-top:10px;border-top:1px solid #e5e5e5}
h3{font-size:15px;margin:20px 0 6px}
.sub{color:#555;margin:0 0 10px}
nav{font-size:13px;margin:10px 0 0}nav a{margin-right:14px;color:#2457a5;text-decoration:none}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f1;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.text{max-width:420px;overflow-wrap:anywhere;font-size:12.5px}
table.heat td{min-width:74px;text-align:center}
.more{font-size:12px;color:#666;margin:2px 0 10px}
.note{font-size:13px;color:#444;background:#f7f7f2;border-left:3px solid #c9c19b;padding:6px 10px}
.warnbox{font-size:13px;background:#fff4f4;border-left:3px solid #c33;padding:6px 10px}
table.shares td:first-child{white-space:nowrap}
.bar{display:flex;height:14px;width:260px;border-radius:2px;overflow:hidden;background:#eee}
.bar span{display:block;height:100%}
.legend{font-size:12px;margin:4px 0}.legend .key{margin-right:12px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:13px}
.kv dt{color:#555}.kv dd{margin:0}
img{max-width:100%;height:auto}
code{font-size:12.5px;background:#f2f2f2;padding:1px 4px;border-radius:3px}
footer{margin-top:40px;font-size:12px;color:#777}
"""


def page(title: str, body: str, *, with_map: bool = False) -> str:
    """A whole self-contained HTML document."""
    css = BASE_CSS + (MAP_CSS if with_map else "")
    script = map_script() if with_map else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{css}</style></head>"
        f"<body><main>{body}</main>{script}</body></html>\n"
    )


def write_datamap_html(
    df,
    output: str | Path,
    *,
    thresholds: dict | None = None,
    title: str = "Data map",
    max_points: int = DEFAULT_MAP_POINTS,
    texts=None,
    issues=None,
    label_names: Sequence[str] | None = None,
    seed: int = 0,
) -> Path:
    """A standalone interactive data map page of profile `df` (written atomically)."""
    from soicurate.atomic import write_text_atomic

    data = map_data(df, thresholds=thresholds, max_points=max_points, texts=texts, issues=issues,
                    label_names=label_names, seed=seed)  # fmt: skip
    body = f'<h1>{esc(title)}</h1><p class="sub">{df.height:,} examples</p>' + datamap_fragment(data)
    write_text_atomic(output, page(title, body, with_map=True))
    return Path(output)
