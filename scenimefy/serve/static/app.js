// The scenimefy page: upload photos and videos to POST /v1/translate, show each result beside its
// original (a photo: a before/after slider; a video: the translated clip in a <video> player).
// Self-contained (no libraries): uploads with XMLHttpRequest for progress, "Download all" builds
// an uncompressed ZIP in the browser.
"use strict";

const PARALLEL = 3; // uploads in flight at once; the server batches what arrives together
const $ = (sel, root = document) => root.querySelector(sel);
const queue = [];
const items = [];
let active = 0;

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function updateSummary() {
  const done = items.filter((i) => i.state === "done").length;
  const failed = items.filter((i) => i.state === "failed").length;
  const pending = items.length - done - failed;
  const parts = [];
  if (done) parts.push(`${done} done`);
  if (pending) parts.push(`${pending} in progress`);
  if (failed) parts.push(`${failed} failed`);
  $("#summary").textContent = parts.join(" · ");
  $("#download-all").disabled = done === 0;
  $("#clear").disabled = items.length === 0 || pending > 0;
}

function setState(item, state, detail) {
  item.state = state;
  item.card.classList.remove("queued", "uploading", "translating", "done", "failed");
  item.card.classList.add(state);
  if (detail !== undefined) $(".detail", item.card).textContent = detail;
  const text = { queued: "Waiting…", uploading: "Uploading…", translating: "Translating…" }[state];
  if (text) $(".pending-text", item.card).textContent = text;
  updateSummary();
}

const VIDEO_NAME = /\.(mp4|mov|mkv|webm)$/i;

function addFiles(files) {
  for (const file of files) {
    const card = $("#card").content.firstElementChild.cloneNode(true);
    const video = file.type.startsWith("video/") || VIDEO_NAME.test(file.name);
    const item = { file, card, video, state: "queued", result: null, name: null };
    $(".name", card).textContent = file.name;
    $(".name", card).title = file.name;
    $(".detail", card).textContent = `${formatBytes(file.size)} · waiting`;
    if (video) {
      card.classList.add("video");
      const preview = $(".video-original", card);
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    } else {
      $(".original", card).src = URL.createObjectURL(file);
    }
    const compare = $(".compare", card);
    $(".slider", card).addEventListener("input", (e) => compare.style.setProperty("--pos", `${e.target.value}%`));
    $(".retry", card).addEventListener("click", () => {
      $(".retry", card).hidden = true;
      enqueue(item);
    });
    $("#results").prepend(card);
    items.push(item);
    enqueue(item);
  }
  updateSummary();
}

function enqueue(item) {
  setState(item, "queued", `${formatBytes(item.file.size)} · waiting`);
  queue.push(item);
  pump();
}

function pump() {
  while (active < PARALLEL && queue.length) {
    active += 1;
    upload(queue.shift()).finally(() => {
      active -= 1;
      pump();
    });
  }
}

function errorText(xhr) {
  try {
    const body = JSON.parse(new TextDecoder().decode(xhr.response));
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return xhr.status ? `server answered ${xhr.status}` : "no answer from the server";
}

function upload(item) {
  return new Promise((resolve) => {
    const params = new URLSearchParams({ format: $("#format").value });
    const maxSide = $("#max-side").value;
    if (maxSide !== "0") params.set("max_side", maxSide);
    const form = new FormData();
    form.append("image", item.file, item.file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `v1/translate?${params}`);
    xhr.responseType = "arraybuffer";
    const bar = $(".bar span", item.card);
    setState(item, "uploading", `${formatBytes(item.file.size)} · uploading`);
    const started = performance.now();
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) bar.style.width = `${(100 * e.loaded) / e.total}%`;
    };
    xhr.upload.onload = () => setState(item, "translating", "translating");
    xhr.onload = () => {
      if (xhr.status !== 200) {
        fail(item, errorText(xhr));
        return resolve();
      }
      const type = xhr.getResponseHeader("Content-Type") || "image/png";
      const blob = new Blob([xhr.response], { type });
      const match = /filename="([^"]+)"/.exec(xhr.getResponseHeader("Content-Disposition") || "");
      item.name = match ? match[1] : "result.png";
      item.result = blob;
      if (item.video) {
        showVideo(item, xhr, blob, started);
        return resolve();
      }
      const img = $(".result", item.card);
      img.onload = () => {
        const secs = ((performance.now() - started) / 1000).toFixed(1);
        const size = `${img.naturalWidth}×${img.naturalHeight}`;
        setState(item, "done", `${size} · ${formatBytes(blob.size)} · ${secs} s`);
        const link = $(".download", item.card);
        link.href = img.src;
        link.download = item.name;
        link.hidden = false;
        resolve();
      };
      img.onerror = () => {
        fail(item, "the result could not be displayed");
        resolve();
      };
      img.src = URL.createObjectURL(blob);
    };
    xhr.onerror = () => {
      fail(item, "connection failed; is the server still running?");
      resolve();
    };
    xhr.send(form);
  });
}

function showVideo(item, xhr, blob, started) {
  // The download works for every container; the player shows what the browser can play (MP4, WebM).
  const player = $(".video-result", item.card);
  const url = URL.createObjectURL(blob);
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  const frames = xhr.getResponseHeader("X-Video-Frames") || "?";
  const size = (xhr.getResponseHeader("X-Video-Size") || "").replace("x", "×");
  const link = $(".download", item.card);
  link.href = url;
  link.download = item.name;
  link.hidden = false;
  player.onerror = () => {
    player.hidden = true;
    setState(item, "done", `${frames} frames · ${formatBytes(blob.size)} · ${secs} s · download to play`);
  };
  player.hidden = false;
  player.src = url;
  setState(item, "done", `${frames} frames · ${size} · ${formatBytes(blob.size)} · ${secs} s`);
}

function fail(item, message) {
  setState(item, "failed", message);
  $(".retry", item.card).hidden = false;
}

// ---- Download all: an uncompressed ZIP built here ----------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

async function zip(files) {
  const parts = [];
  const central = [];
  let offset = 0;
  const used = new Set();
  for (const { name, blob } of files) {
    let unique = name;
    for (let n = 1; used.has(unique); n++) unique = name.replace(/(\.[^.]*)?$/, `_${n}$1`);
    used.add(unique);
    const data = new Uint8Array(await blob.arrayBuffer());
    const nameBytes = new TextEncoder().encode(unique);
    const crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true);
    local.setUint16(6, 0x0800, true); // UTF-8 names
    local.setUint32(14, crc, true);
    local.setUint32(18, data.length, true);
    local.setUint32(22, data.length, true);
    local.setUint16(26, nameBytes.length, true);
    const entry = new DataView(new ArrayBuffer(46));
    entry.setUint32(0, 0x02014b50, true);
    entry.setUint16(4, 20, true);
    entry.setUint16(6, 20, true);
    entry.setUint16(8, 0x0800, true);
    entry.setUint32(16, crc, true);
    entry.setUint32(20, data.length, true);
    entry.setUint32(24, data.length, true);
    entry.setUint16(28, nameBytes.length, true);
    entry.setUint32(42, offset, true);
    parts.push(local, nameBytes, data);
    central.push(entry, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const size = central.reduce((s, p) => s + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true);
  end.setUint16(10, files.length, true);
  end.setUint32(12, size, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

async function downloadAll() {
  const done = items.filter((i) => i.state === "done");
  if (!done.length) return;
  const blob = await zip(done.map((i) => ({ name: i.name, blob: i.result })));
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "scenimefy-results.zip";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- Wiring -------------------------------------------------------------------------------

function init() {
  const drop = $("#drop");
  const input = $("#files");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") input.click();
  });
  $("#choose").addEventListener("click", (e) => {
    e.stopPropagation();
    input.click();
  });
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.remove("over");
    });
  }
  drop.addEventListener("drop", (e) => addFiles([...e.dataTransfer.files]));
  $("#download-all").addEventListener("click", downloadAll);
  $("#clear").addEventListener("click", () => {
    for (const i of items.splice(0)) i.card.remove();
    updateSummary();
  });
  fetch("v1/model")
    .then((r) => r.json())
    .then((m) => {
      const a = m.architecture || {};
      const run = (m.training || {})["run.name"];
      $("#model").textContent = `${run || m.checkpoint} · ngf ${a.ngf}, ${a.n_blocks} blocks · ${
        (m.serving || {}).device || ""}`;
      $("#model").title = JSON.stringify(m, null, 2);
      const l = m.limits || {};
      if (l.max_upload_bytes) {
        const video = l.max_video_upload_bytes ? `, ${formatBytes(l.max_video_upload_bytes)} per video` : "";
        $("#limits").textContent = `Up to ${formatBytes(l.max_upload_bytes)} per photo${video}.`;
      }
    })
    .catch(() => {
      $("#model").textContent = "model info unavailable";
    });
  updateSummary();
}

init();
