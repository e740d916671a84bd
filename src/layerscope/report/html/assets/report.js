// layerscope report: sortable tables and hover read-outs. No network, no innerHTML: data from the
// page's attributes is only ever written with textContent.
(function () {
  "use strict";

  function cellKey(row, index) {
    var cell = row.cells[index];
    return cell ? cell.getAttribute("data-sort") || "" : "";
  }

  function sortBy(table, index, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keys = rows.map(function (r) { return cellKey(r, index); });
    var numeric = keys.every(function (k) { return k === "" || !isNaN(parseFloat(k)); });
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var order = rows.map(function (r, i) { return i; });
    order.sort(function (a, b) {
      var x = keys[a], y = keys[b];
      if (x === "" || y === "") { return x === y ? a - b : (x === "" ? 1 : -1); } // missing: always last
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return (ascending ? c : -c) || a - b;
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      if (h.hasAttribute("aria-sort")) { h.setAttribute("aria-sort", "none"); }
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    order.forEach(function (i) { body.appendChild(rows[i]); });
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable-table"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      if (!th.classList.contains("sortable")) { return; }
      th.addEventListener("click", function () { sortBy(table, index, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, index, th); }
      });
    });
  });

  var tip = document.getElementById("tip");
  var cache = new WeakMap();

  function list(el, name) {
    var raw = el.getAttribute(name);
    return raw ? JSON.parse(raw) : null;
  }

  function parsed(el) {
    var d = cache.get(el);
    if (!d) {
      var edges = el.getAttribute("data-edges");
      d = {
        rows: parseInt(el.getAttribute("data-rows"), 10),
        cols: parseInt(el.getAttribute("data-cols"), 10),
        v: (el.getAttribute("data-v") || "").split(","),
        rl: list(el, "data-rl"),
        cl: list(el, "data-cl"),
        edges: edges ? edges.split(",") : null,
        sep: el.getAttribute("data-sep") || ""
      };
      cache.set(el, d);
    }
    return d;
  }

  function where(d, r, c) {
    if (d.edges) { return "[" + d.edges[c] + ", " + d.edges[c + 1] + ")"; }
    if (d.rl || d.cl) {
      return [d.rl ? d.rl[r] : r, d.cl ? d.cl[c] : c].join(d.sep);
    }
    return d.rows > 1 ? "(" + r + ", " + c + ")" : String(c);
  }

  function show(e) {
    var el = e.target;
    if (!tip || !el.classList || !el.classList.contains("hit")) { return; }
    var d = parsed(el), box = el.getBoundingClientRect();
    var c = Math.min(d.cols - 1, Math.max(0, Math.floor((e.clientX - box.left) / box.width * d.cols)));
    var r = Math.min(d.rows - 1, Math.max(0, Math.floor((e.clientY - box.top) / box.height * d.rows)));
    tip.textContent = where(d, r, c) + ": " + (d.v[r * d.cols + c] || "—");
    tip.hidden = false;
    tip.style.left = Math.max(4, Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8)) + "px";
    tip.style.top = (e.clientY + 14) + "px";
  }

  document.addEventListener("mousemove", show);
  document.addEventListener("mouseout", function (e) {
    if (tip && e.target.classList && e.target.classList.contains("hit")) { tip.hidden = true; }
  });
})();
