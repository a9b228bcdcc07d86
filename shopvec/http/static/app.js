// The search page: builds a search from the form, sends it to the API, draws the results.
// Every value from the catalogue goes into the page as text (textContent), never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const IMAGE_SOURCE = /^(https?:\/\/|data:image\/(jpeg|png|gif|webp);base64,)/i;
let photo = null;

function newUserId() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return "shopper-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function userId() {
  const value = $("user").value.trim();
  return value || null;
}

function filters() {
  const out = {};
  const category = $("category").value.trim();
  const brand = $("brand").value.trim();
  if (category) out.category = category;
  if (brand) out.brand = brand;
  const min = parseFloat($("price-min").value);
  const max = parseFloat($("price-max").value);
  if (!Number.isNaN(min)) out.price_min = min;
  if (!Number.isNaN(max)) out.price_max = max;
  if ($("in-stock").checked) out.in_stock = true;
  return Object.keys(out).length ? out : null;
}

function baseQuery() {
  const query = { top_k: 24 };
  const f = filters();
  if (f) query.filters = f;
  if ($("personalise").checked && userId()) query.user_id = userId();
  return query;
}

function say(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
  status.setAttribute("role", isError ? "alert" : "status");
}

async function send(url, init, label) {
  say("Searching…");
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    say("The service did not answer: " + err, true);
    return;
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok || !body || body.error) {
    const message = body && body.error ? body.error.kind + ": " + body.error.message : response.statusText;
    say("Search failed (" + response.status + "): " + message, true);
    draw([]);
    return;
  }
  draw(body.results, body);
  const n = body.results.length;
  say(n + (n === 1 ? " result" : " results") + " for " + label + " (" + body.scenario + ", " +
    Math.round(body.took_ms) + " ms" + (body.truncated ? ", cut short" : "") + ")");
}

function search() {
  const text = $("q").value.trim();
  const query = baseQuery();
  if (text) query.text = text;
  if (photo) {
    const form = new FormData();
    form.append("photo", photo, photo.name || "photo");
    form.append("query", JSON.stringify(query));
    const label = text ? "“" + text + "” and the photo" : "the photo";
    return send("/v1/search/photo", { method: "POST", body: form }, label);
  }
  if (!text && !query.user_id) {
    say("Type some words or choose a photo.", true);
    return;
  }
  const label = text ? "“" + text + "”" : "you (recommendations)";
  return send("/v1/search", json(query), label);
}

function moreLikeThis(result) {
  const query = baseQuery();
  query.like_product_id = result.product_id;
  record(result, "click");
  return send("/v1/search", json(query), "more like “" + result.title + "”");
}

function json(body) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

function record(result, type) {
  const user = userId();
  if (!user || !$("personalise").checked) return;
  fetch("/v1/events", json({ user_id: user, product_id: result.product_id, type: type }))
    .catch(() => {});
}

// Each modality's score as a bar. Similarities (0 to 1) are drawn as they are; a score on
// another scale (BM25's, for the words) is drawn against the highest one on the page.
function scoreRows(result) {
  const explanation = result.explanation || {};
  const rows = [];
  for (const [name, value] of Object.entries(explanation.scores || {})) {
    if (typeof value === "number") rows.push([name, name.replace(/_(vec|sparse)$/, ""), value]);
  }
  if (explanation.personalised) {
    for (const name of ["taste", "cf"]) {
      if (typeof explanation[name] === "number") {
        rows.push([name, name === "cf" ? "others" : name, explanation[name]]);
      }
    }
  }
  if (!rows.length) rows.push(["score", "score", result.score]);
  return rows;
}

function scales(results) {
  const highest = {};
  for (const result of results) {
    for (const [key, , value] of scoreRows(result)) {
      highest[key] = Math.max(highest[key] || 0, value);
    }
  }
  const out = {};
  for (const [key, value] of Object.entries(highest)) out[key] = value > 1 ? value : 1;
  return out;
}

function bars(result, scale) {
  const box = document.createElement("div");
  box.className = "bars";
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "Why this result: score per modality");
  for (const [key, name, value] of scoreRows(result)) {
    const id = "m-" + result.rank + "-" + key;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = name;
    const meter = document.createElement("meter");
    meter.id = id;
    meter.min = 0;
    meter.max = 1;
    meter.value = Math.max(0, Math.min(1, value / (scale[key] || 1)));
    meter.textContent = value.toFixed(3);
    const number = document.createElement("span");
    number.textContent = value.toFixed(2);
    box.append(label, meter, number);
  }
  return box;
}

function price(result) {
  if (result.price === null || result.price === undefined) return "";
  const currency = result.currency || "";
  try {
    if (currency) return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(result.price);
  } catch (err) {
    // an unknown currency code: shown as it came
  }
  return (currency ? currency + " " : "") + result.price;
}

function card(result, scale) {
  const item = document.createElement("li");
  const src = result.thumbnail || result.image_url || "";
  if (IMAGE_SOURCE.test(src)) {
    const img = document.createElement("img");
    img.src = src;
    img.alt = result.title;
    img.loading = "lazy";
    item.append(img);
  } else {
    const none = document.createElement("div");
    none.className = "noimg";
    none.textContent = "no photo";
    item.append(none);
  }
  const title = document.createElement("h2");
  const link = document.createElement("a");
  link.href = "/v1/products/" + encodeURIComponent(result.product_id);
  link.textContent = result.title || result.product_id;
  link.addEventListener("click", () => record(result, "click"));
  title.append(link);
  const meta = document.createElement("p");
  meta.className = "meta";
  const amount = document.createElement("span");
  amount.className = "price";
  amount.textContent = price(result);
  meta.append(amount, document.createTextNode(" " + [result.brand, (result.category_path || []).slice(-1)[0]]
    .filter(Boolean).join(" · ")));
  item.append(title, meta);
  if (result.explanation && result.explanation.personalised) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "for you";
    item.append(badge);
  }
  item.append(bars(result, scale));
  const more = document.createElement("button");
  more.type = "button";
  more.className = "plain";
  more.textContent = "More like this";
  more.setAttribute("aria-label", "More like " + (result.title || result.product_id));
  more.addEventListener("click", () => moreLikeThis(result));
  item.append(more);
  return item;
}

function draw(results) {
  const scale = scales(results);
  $("results").replaceChildren(...results.map((result) => card(result, scale)));
}

function setPhoto(file) {
  if (file && !/^image\//.test(file.type)) {
    say("That file is not a photo.", true);
    return;
  }
  photo = file || null;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !photo;
  $("clear-photo").hidden = !photo;
  if (photo) preview.src = URL.createObjectURL(photo);
  else preview.removeAttribute("src");
}

function start() {
  const stored = localStorage.getItem("shopvec-user");
  $("user").value = stored || newUserId();
  localStorage.setItem("shopvec-user", $("user").value);
  $("user").addEventListener("change", () => localStorage.setItem("shopvec-user", $("user").value.trim()));
  $("new-user").addEventListener("click", () => {
    $("user").value = newUserId();
    localStorage.setItem("shopvec-user", $("user").value);
  });
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("photo").addEventListener("change", () => {
    setPhoto($("photo").files[0]);
    if (photo) search();
  });
  $("clear-photo").addEventListener("click", () => {
    $("photo").value = "";
    setPhoto(null);
    $("photo").focus();
  });
  for (const id of ["category", "brand", "price-min", "price-max", "in-stock"]) {
    $(id).addEventListener("change", () => {
      if ($("q").value.trim() || photo) search();
    });
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) {
      setPhoto(file);
      search();
    }
  });
  $("q").focus();
}

document.addEventListener("DOMContentLoaded", start);
