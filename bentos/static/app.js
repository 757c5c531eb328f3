// Tailor demo page: POST the photo to /search, draw boxes + masks, list tags and product cards.
"use strict";
const COLORS = ["#ff3b30", "#0a84ff", "#34c759", "#ff9f0a", "#af52de", "#5ac8fa", "#ffcc00", "#ff2d55"];
const $ = (id) => document.getElementById(id);

// COCO compressed RLE -> run lengths (port of pycocotools' rleFrString).
function rleCounts(s) {
  const cnts = []; let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20; p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (cnts.length > 2) x += cnts[cnts.length - 2];
    cnts.push(x);
  }
  return cnts;
}

// Masks come at the service's working size (at most 1024 px a side), not the photo's:
// paint one on its own canvas, then draw it over the photo at the photo's size.
function drawMask(ctx, mask, color) {
  const [h, w] = mask.size;
  const off = document.createElement("canvas");
  off.width = w; off.height = h;
  const octx = off.getContext("2d"), img = octx.createImageData(w, h);
  const r = parseInt(color.slice(1, 3), 16), g = parseInt(color.slice(3, 5), 16), b = parseInt(color.slice(5, 7), 16);
  let i = 0, on = false;
  for (const n of rleCounts(mask.counts)) {
    if (on) {
      for (let j = i; j < i + n; j++) {  // column-major: j = x * h + y
        const x = Math.floor(j / h), y = j % h, o = (y * w + x) * 4;
        img.data[o] = r; img.data[o + 1] = g; img.data[o + 2] = b; img.data[o + 3] = 128;
      }
    }
    i += n; on = !on;
  }
  octx.putImageData(img, 0, 0);
  ctx.drawImage(off, 0, 0, ctx.canvas.width, ctx.canvas.height);
}

// Links and images from the catalog are data the crawler stored from shop pages: only
// http(s) (or this service's own paths) become a link or an image, never javascript: or data:.
function safeUrl(u) {
  try {
    const x = new URL(String(u ?? ""), location.href);
    return x.protocol === "http:" || x.protocol === "https:" ? x.href : "";
  } catch (e) { return ""; }
}

function esc(s) { return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }

function render(bitmap, data) {
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  ctx.drawImage(bitmap, 0, 0);
  data.garments.forEach((g, i) => drawMask(ctx, g.mask, COLORS[i % COLORS.length]));
  ctx.lineWidth = Math.max(2, bitmap.width / 200); ctx.font = `${Math.max(12, bitmap.width / 30)}px sans-serif`;
  data.garments.forEach((g, i) => {
    const [x1, y1, x2, y2] = g.box, c = COLORS[i % COLORS.length];
    ctx.strokeStyle = c; ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = c; ctx.fillText(`${i + 1} ${g.category}`, x1 + 4, y1 + parseInt(ctx.font) + 2);
  });
  $("garments").innerHTML = data.garments.map((g, i) => `
    <article class="garment" data-category="${esc(g.category)}">
      <h2>${i + 1}. ${esc(g.category)} <small>score ${g.score.toFixed(2)}</small></h2>
      <div class="tags">${Object.entries(g.tags).map(([k, t]) => `<span class="tag">${esc(k)}: <b>${esc(t.value)}</b> ${(t.score * 100).toFixed(0)}%</span>`).join("")}</div>
      <div class="cards">${g.matches.map((m) => `
        <a class="card"${safeUrl(m.url) ? ` href="${esc(safeUrl(m.url))}"` : ""} target="_blank" rel="noopener noreferrer" data-product-id="${esc(m.product_id)}">
          <img${safeUrl(m.image_url) ? ` src="${esc(safeUrl(m.image_url))}"` : ""} alt="${esc(m.title)}" loading="lazy">
          <div class="meta"><div class="title">${esc(m.title)}</div>
            <div class="price">${m.price == null ? "" : esc(m.price) + " " + esc(m.currency)}</div>
            <div class="mall">${esc(m.mall)}</div><div class="score">similarity ${m.score.toFixed(3)}</div></div>
        </a>`).join("")}</div>
    </article>`).join("");
  // no inline style or handler attributes: the page's Content-Security-Policy allows neither
  document.querySelectorAll("#garments .garment").forEach((el, i) => el.style.setProperty("--c", COLORS[i % COLORS.length]));
  document.querySelectorAll("#garments .card img").forEach((img) => img.addEventListener("error", () => { img.style.visibility = "hidden"; }));
  $("result").hidden = false;
}

async function search(file) {
  const status = $("status");
  status.className = ""; status.textContent = `searching ${file.name}…`;
  const form = new FormData();
  form.append("image", file);
  form.append("k", $("k").value || "6");
  if ($("category").value) form.append("category", $("category").value);
  try {
    const res = await fetch("/search", { method: "POST", body: form });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${res.status}`);
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    render(bitmap, data);
    const n = data.garments.length;
    status.textContent = `${n} garment${n === 1 ? "" : "s"} in ${data.timings_ms.total} ms`;
    document.body.dataset.state = "done";
  } catch (err) {
    status.className = "error"; status.textContent = String(err.message || err);
    document.body.dataset.state = "error";
  }
}

async function init() {
  try {
    const info = await (await fetch("/info")).json();
    $("versions").textContent = Object.entries(info.versions).map(([k, v]) => `${k} ${v}`).join(" · ");
    for (const c of info.categories) $("category").insertAdjacentHTML("beforeend", `<option>${esc(c)}</option>`);
  } catch (e) { $("versions").textContent = "versions unavailable"; }
  const drop = $("drop");
  $("file").addEventListener("change", (e) => e.target.files[0] && search(e.target.files[0]));
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => e.dataTransfer.files[0] && search(e.dataTransfer.files[0]));
}
init();
