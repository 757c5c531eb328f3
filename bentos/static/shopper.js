// Tailor demo page, shopper views: My closet, Complete the look, Browse by attributes.
// Uses $, esc, safeUrl and drawMask from app.js. The API token is kept in localStorage
// and sent as "Authorization: Bearer"; closet photos are fetched with it into blob: URLs
// (an <img src> cannot carry a header).
"use strict";
const CAT_COLORS = ["#ff3b30", "#0a84ff", "#34c759", "#ff9f0a", "#af52de", "#5ac8fa", "#ffcc00", "#ff2d55",
  "#8e8e93", "#a2845e", "#30b0c7", "#5856d6", "#ff6482", "#64d2ff", "#bf5af2", "#32d74b", "#ffd60a", "#ac8e68", "#66d4cf"];
const shop = { info: null, cursor: null, map: null, query: null };

function token() { return $("token").value.trim(); }
function authHeaders() { return token() ? { Authorization: `Bearer ${token()}` } : {}; }

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), ...authHeaders() } });
  if (res.status === 204) return null;
  const data = await res.json();
  if (!res.ok) throw new Error(data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${res.status}`);
  return data;
}

function setStatus(id, text, error = false) { const el = $(id); el.textContent = text; el.className = error ? "status error" : "status"; }

async function blobUrl(path) {
  const res = await fetch(path, { headers: authHeaders() });
  return res.ok ? URL.createObjectURL(await res.blob()) : "";
}

function productCard(p, extra = "") {
  const url = safeUrl(p.url), img = safeUrl(p.image_url);
  return `<a class="card"${url ? ` href="${esc(url)}"` : ""} target="_blank" rel="noopener noreferrer" data-product-id="${esc(p.product_id)}">
    <img${img ? ` src="${esc(img)}"` : ""} alt="${esc(p.title)}" loading="lazy">
    <div class="meta"><div class="title">${esc(p.title)}</div>
      <div class="price">${p.price == null ? "" : esc(p.price) + " " + esc(p.currency)}</div>
      <div class="mall">${esc(p.mall)} · ${esc(p.category)}</div>${extra}</div></a>`;
}

function hideBroken(root) { root.querySelectorAll("img").forEach((i) => i.addEventListener("error", () => { i.style.visibility = "hidden"; })); }

// ------------------------------------------------------------------ tabs
function show(view) {
  document.querySelectorAll("#tabs button").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.view === view)));
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${view}`; });
  document.body.dataset.view = view;
  if (view === "closet") loadCloset();
  if (view === "browse" && !shop.map) { loadMap(); loadProducts(true); }
}

// ------------------------------------------------------------------ closet
function tagSelect(item, head) {
  const values = shop.info.attributes[head], cur = item.tags[head] ? item.tags[head].value : "";
  const fixed = item.tags[head] && item.tags[head].source === "user";
  return `<label class="${fixed ? "fixed" : ""}">${esc(head)} <select data-item="${esc(item.id)}" data-head="${esc(head)}">
    ${cur ? "" : "<option value=\"\">?</option>"}${values.map((v) => `<option${v === cur ? " selected" : ""}>${esc(v)}</option>`).join("")}</select></label>`;
}

async function loadCloset() {
  if (!token()) { setStatus("closet-status", "enter your API token above (tailor users add NAME prints one)", true); return; }
  try {
    const cat = $("closet-category").value;
    const data = await api(`/closet/items${cat ? `?category=${encodeURIComponent(cat)}` : ""}`);
    const box = $("closet");
    box.innerHTML = Object.entries(data.categories).map(([c, items]) => `
      <section class="closet-group" data-category="${esc(c)}"><h2>${esc(c)} <small>${items.length}</small></h2>
        <div class="cards">${items.map((it) => `
          <article class="item" data-id="${esc(it.id)}"><img alt="${esc(c)}">
            <div class="meta">
              <label class="${it.category_source === "user" ? "fixed" : ""}">category <select data-item="${esc(it.id)}" data-head="category">
                ${shop.info.categories.map((v) => `<option${v === it.category ? " selected" : ""}>${esc(v)}</option>`).join("")}</select></label>
              ${(shop.info.applicable[it.category] || []).map((h) => tagSelect(it, h)).join("")}
              <button data-delete="${esc(it.id)}">delete</button>
            </div></article>`).join("")}</div></section>`).join("") || "<p>Your closet is empty: add a photo of a garment you own.</p>";
    box.querySelectorAll(".item").forEach(async (el) => { el.querySelector("img").src = await blobUrl(`/closet/items/${el.dataset.id}/image`); });
    box.querySelectorAll("select").forEach((s) => s.addEventListener("change", () => correct(s)));
    box.querySelectorAll("button[data-delete]").forEach((b) => b.addEventListener("click", () => removeItem(b.dataset.delete)));
    setStatus("closet-status", `${data.count} item${data.count === 1 ? "" : "s"}`);
    document.body.dataset.closet = String(data.count);
  } catch (err) { setStatus("closet-status", String(err.message || err), true); }
}

async function addItem(file) {
  setStatus("closet-status", `classifying ${file.name}…`);
  const form = new FormData(); form.append("image", file);
  try {
    const it = await api("/closet/items", { method: "POST", body: form });
    await loadCloset();
    setStatus("closet-status", `added: ${it.category}`);
  } catch (err) { setStatus("closet-status", String(err.message || err), true); }
}

async function correct(sel) {
  const head = sel.dataset.head, body = head === "category" ? { category: sel.value } : { tags: { [head]: sel.value } };
  try {
    await api(`/closet/items/${sel.dataset.item}`, { method: "PATCH", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    await loadCloset();
    setStatus("closet-status", `corrected ${head}`);
  } catch (err) { setStatus("closet-status", String(err.message || err), true); }
}

async function removeItem(id) {
  try { await api(`/closet/items/${id}`, { method: "DELETE" }); await loadCloset(); setStatus("closet-status", "deleted"); }
  catch (err) { setStatus("closet-status", String(err.message || err), true); }
}

// ------------------------------------------------------------------ look
async function lookUp(file) {
  if (!token()) { setStatus("look-status", "enter your API token above", true); return; }
  setStatus("look-status", `looking at ${file.name}…`);
  const form = new FormData(); form.append("image", file); form.append("k", "4");
  try {
    const data = await api("/look", { method: "POST", body: form });
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const canvas = $("look-canvas"), ctx = canvas.getContext("2d");
    canvas.width = bitmap.width; canvas.height = bitmap.height; ctx.drawImage(bitmap, 0, 0);
    ctx.lineWidth = Math.max(3, bitmap.width / 120);
    data.garments.forEach((g, i) => {
      const [x1, y1, x2, y2] = g.box;
      ctx.strokeStyle = g.status === "covered" ? "#34c759" : "#ff9f0a"; ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.fillStyle = ctx.strokeStyle; ctx.font = `${Math.max(12, bitmap.width / 28)}px sans-serif`;
      ctx.fillText(`${i + 1} ${g.category}`, x1 + 4, y1 + Math.max(12, bitmap.width / 28));
    });
    $("look-garments").innerHTML = data.garments.map((g, i) => `
      <article class="look-garment ${g.status}" data-status="${g.status}">
        <h2>${i + 1}. ${esc(g.category)} — ${g.status === "covered" ? "you own something similar" : "missing"}</h2>
        ${g.status === "covered" ? `<div class="owned"><img data-owned="${esc(g.closet_item.id)}" alt="closet item">
          <span>${esc(g.closet_item.category)} from your closet · similarity ${g.similarity.toFixed(2)}</span></div>`
        : `<p class="hint">${g.closet_item ? `closest owned ${esc(g.closet_item.category)}: similarity ${g.similarity.toFixed(2)} (below ${data.covered_min})` : "nothing of this category in your closet"}</p>
           <div class="cards">${g.products.map((p) => productCard(p, `<div class="score">similarity ${p.score.toFixed(3)}</div>`)).join("")}</div>`}
      </article>`).join("");
    const root = $("look-garments");
    root.querySelectorAll("img[data-owned]").forEach(async (img) => { img.src = await blobUrl(`/closet/items/${img.dataset.owned}/image`); });
    hideBroken(root);
    $("look-result").hidden = false;
    const covered = data.garments.filter((g) => g.status === "covered").length;
    setStatus("look-status", `${data.garments.length} garments: ${covered} covered, ${data.garments.length - covered} missing`);
    document.body.dataset.look = "done";
  } catch (err) { setStatus("look-status", String(err.message || err), true); document.body.dataset.look = "error"; }
}

// ------------------------------------------------------------------ browse
function filterParams() {
  const q = new URLSearchParams();
  document.querySelectorAll("#filters select").forEach((s) => { if (s.value) q.set(s.dataset.param, s.value); });
  return q;
}

async function loadProducts(reset) {
  const q = filterParams(); q.set("limit", "24");
  if (!reset && shop.cursor) q.set("cursor", shop.cursor);
  try {
    const page = await api(`/products?${q}`);
    const box = $("products");
    const html = page.products.map((p) => productCard(p, `<div class="tags">${Object.entries(p.tags).map(([k, v]) => `<span class="tag">${esc(k)}: <b>${esc(v)}</b></span>`).join("")}</div>`)).join("");
    if (reset) box.innerHTML = html; else box.insertAdjacentHTML("beforeend", html);
    hideBroken(box);
    shop.cursor = page.next_cursor; $("more").hidden = !page.next_cursor;
    shop.query = null; drawMap();
    setStatus("browse-status", `${page.total} products match`);
    document.body.dataset.browse = "done";
  } catch (err) { setStatus("browse-status", String(err.message || err), true); }
}

async function loadMap() {
  try { shop.map = await api("/catalog/map"); drawMap(); } catch (err) { setStatus("browse-status", String(err.message || err), true); }
}

function drawMap() {
  const m = shop.map; if (!m) return;
  const canvas = $("map"), ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 16;
  const pts = m.points.concat(shop.query ? [{ x: shop.query.xy[0], y: shop.query.xy[1] }] : []);
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => pad + (x - x0) / ((x1 - x0) || 1) * (W - 2 * pad), sy = (y) => H - pad - (y - y0) / ((y1 - y0) || 1) * (H - 2 * pad);
  const cats = [...new Set(m.points.map((p) => p.category))].sort();
  const color = (c) => CAT_COLORS[cats.indexOf(c) % CAT_COLORS.length];
  const sel = filterParams().get("category");
  ctx.clearRect(0, 0, W, H);
  for (const p of m.points) {
    ctx.globalAlpha = !sel || p.category === sel ? 0.8 : 0.12;
    ctx.fillStyle = color(p.category); ctx.beginPath(); ctx.arc(sx(p.x), sy(p.y), 3, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
  if (shop.query) {
    const qx = sx(shop.query.xy[0]), qy = sy(shop.query.xy[1]);
    const byId = new Map(m.points.map((p) => [p.product_id, p]));
    ctx.strokeStyle = "#1d1d1f"; ctx.lineWidth = 1;
    for (const id of shop.query.neighbours) { const p = byId.get(id); if (p) { ctx.beginPath(); ctx.moveTo(qx, qy); ctx.lineTo(sx(p.x), sy(p.y)); ctx.stroke(); } }
    ctx.fillStyle = "#1d1d1f"; ctx.beginPath(); ctx.arc(qx, qy, 8, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#fff"; ctx.beginPath(); ctx.arc(qx, qy, 4, 0, 2 * Math.PI); ctx.fill();
  }
  $("map-legend").innerHTML = `${esc(m.method.toUpperCase())} of the product embeddings (index ${esc(m.index_version)}) · ` +
    cats.map((c) => `<span class="tag"><b class="dot" data-c="${esc(c)}">●</b> ${esc(c)}</span>`).join(" ") + (shop.query ? " · ◉ your photo, lines to its matches" : "");
  $("map-legend").querySelectorAll(".dot").forEach((d) => d.style.setProperty("color", color(d.dataset.c)));
}

async function similarByAttributes(file) {
  setStatus("browse-status", `tagging ${file.name}…`);
  const form = new FormData(); form.append("image", file); form.append("k", "12");
  try {
    const data = await api("/search/attributes", { method: "POST", body: form });
    const g = data.garments[0];
    $("products").innerHTML = g.products.map((p) => productCard(p, `<div class="shared">${p.shared_tags} shared: ${esc(p.matching.join(", "))}</div>`)).join("");
    hideBroken($("products")); $("more").hidden = true;
    shop.query = { xy: g.map_xy, neighbours: g.products.map((p) => p.product_id) };
    drawMap();
    setStatus("browse-status", `your ${g.category} (${Object.entries(g.tags).map(([k, t]) => `${k} ${t.value}`).join(", ")}): products sharing the most tags`);
    document.body.dataset.browse = "similar";
  } catch (err) { setStatus("browse-status", String(err.message || err), true); }
}

async function initShopper() {
  $("token").value = localStorage.getItem("tailor-token") || "";
  $("token").addEventListener("change", () => { localStorage.setItem("tailor-token", token()); if (document.body.dataset.view === "closet") loadCloset(); });
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));
  try { shop.info = await (await fetch("/info")).json(); } catch (e) { return; }
  for (const c of shop.info.categories) {
    $("closet-category").insertAdjacentHTML("beforeend", `<option>${esc(c)}</option>`);
    $("f-category").insertAdjacentHTML("beforeend", `<option>${esc(c)}</option>`);
  }
  $("f-category").dataset.param = "category";
  for (const [head, values] of Object.entries(shop.info.attributes)) {
    $("attr-file").parentElement.insertAdjacentHTML("beforebegin", `<label>${esc(head)} <select data-param="${esc(head)}" id="f-${esc(head)}"><option value="">any</option>${values.map((v) => `<option>${esc(v)}</option>`).join("")}</select></label>`);
  }
  document.querySelectorAll("#filters select").forEach((s) => s.addEventListener("change", () => loadProducts(true)));
  $("more").addEventListener("click", () => loadProducts(false));
  $("closet-category").addEventListener("change", loadCloset);
  // The input is cleared after each pick, so picking the same photo again fires again.
  const onPick = (id, fn) => $(id).addEventListener("change", (e) => {
    const f = e.target.files[0]; e.target.value = ""; if (f) fn(f);
  });
  onPick("closet-file", addItem);
  onPick("look-file", lookUp);
  onPick("attr-file", similarByAttributes);
  document.body.dataset.shopper = "ready";
}
initShopper();
