// The workbench's actions: each form calls the /api route it names, with the session's
// CSRF token and an Idempotency-Key; an action taken offline is kept in this browser and
// sent (with the same key: applied once) when the connection returns.
(() => {
  "use strict";
  const body = document.body;
  const OUTBOX = "ehswatch-outbox";
  const csrf = () => decodeURIComponent((document.cookie.match(/(?:^|; )ehs_csrf=([^;]*)/) || [])[1] || "");
  const newKey = () => (crypto.randomUUID ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`);
  const outbox = () => { try { return JSON.parse(localStorage.getItem(OUTBOX) || "[]"); } catch { return []; } };
  const keep = (jobs) => localStorage.setItem(OUTBOX, JSON.stringify(jobs));

  function note(text) {
    const el = document.getElementById("offline-note");
    if (!el) return;
    el.textContent = text;
    el.hidden = !text;
  }

  function fields(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name || el.type === "file") continue;
      if (el.dataset.number !== undefined) { if (el.value !== "") out[el.name] = Number(el.value); }
      else if (el.dataset.bool !== undefined) out[el.name] = el.value === "true";
      else out[el.name] = el.value;
    }
    return out;
  }

  function detail(answer) {
    const d = answer && answer.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(-1)[0] || ""}: ${e.msg}`).join("; ");
    return JSON.stringify(answer);
  }

  function post(job) {
    return fetch(job.url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), "Idempotency-Key": job.key },
      body: JSON.stringify(job.body),
    });
  }

  // Only the person who took an action sends it (a shared phone: another's waits for
  // them), only to this service's API, and only while signed in: a 401 keeps it.
  const mine = (job) => job.person && job.person === body.dataset.person
    && typeof job.url === "string" && job.url.startsWith("/api/");
  let flushing = false;

  async function flush() {
    if (flushing || !navigator.onLine || !body.dataset.person) return;
    flushing = true;
    const done = new Set();
    try {
      for (const job of outbox().filter(mine)) {
        let r;
        try { r = await post(job); } catch { break; }  // still offline: all of them wait
        if (r.status === 401) break;  // signed out meanwhile: kept for after sign-in
        if (r.status < 500) done.add(job.key);  // an answer (a refusal too): not again
      }
    } finally {
      flushing = false;
    }
    // Read again: an action kept while these were on their way must not be lost.
    const left = outbox().filter((job) => !done.has(job.key));
    keep(left);
    note(left.some(mine) ? body.dataset.savedOffline : "");
    if (done.size) location.reload();
  }

  async function act(form) {
    const refusal = form.querySelector("[data-refusal]");
    const button = form.querySelector("button[type=submit]");
    const job = { url: form.dataset.api, body: fields(form), key: newKey(), person: body.dataset.person };
    const secret = form.querySelector("input[type=password]") !== null;
    if (refusal) refusal.hidden = true;
    if (button) button.disabled = true;
    try {
      const r = await post(job);
      if (r.ok) { location.reload(); return; }
      const answer = await r.json().catch(() => ({ detail: r.statusText }));
      if (r.status === 401) { location.href = `/app/login?next=${encodeURIComponent(location.pathname)}`; return; }
      if (refusal) { refusal.textContent = detail(answer); refusal.hidden = false; }
    } catch {
      if (secret) {  // a password is never written to the phone's storage
        if (refusal) { refusal.textContent = body.dataset.noConnection; refusal.hidden = false; }
      } else {
        keep([...outbox(), job]);  // no connection: kept, sent when it returns
        note(body.dataset.savedOffline);
      }
    } finally {
      if (button) button.disabled = false;
    }
  }

  async function shrink(file, longest = 1600) {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, longest / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.82));
  }

  async function upload(form, input) {
    const refusal = form.querySelector("[data-refusal]");
    const file = input.files && input.files[0];
    if (!file) return;
    let blob = file, thumb = null;
    try {
      if (file.type.startsWith("image/")) { blob = await shrink(file); thumb = await shrink(file, 240); }
    } catch { blob = file; thumb = null; }
    const data = new FormData();
    const stem = (file.name || "photo").replace(/\.\w+$/, "");
    data.append("file", blob, `${stem}.jpg`);
    if (thumb) data.append("thumbnail", thumb, `${stem}.thumb.jpg`);
    const r = await fetch(form.dataset.upload, {
      method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf() }, body: data,
    });
    if (r.ok) { location.reload(); return; }
    const answer = await r.json().catch(() => ({ detail: r.statusText }));
    if (refusal) { refusal.textContent = detail(answer); refusal.hidden = false; }
  }

  // A record with photos (a cleaning, a patrol round): sent as one multipart request,
  // photos downscaled on the phone. It needs the connection (photos are not kept in the
  // browser): offline, the page says so and nothing is lost from the form.
  async function record(form) {
    const refusal = form.querySelector("[data-refusal]");
    const button = form.querySelector("button[type=submit]");
    const data = new FormData();
    const answers = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.type === "file") {
        const file = el.files && el.files[0];
        if (!file) continue;
        let blob = file, thumb = null;
        try { if (file.type.startsWith("image/")) { blob = await shrink(file); thumb = await shrink(file, 240); } }
        catch { blob = file; thumb = null; }
        if (el.name.startsWith("photo:")) {
          data.append("photo_items", el.name.slice(6));
          data.append("photos", blob, "photo.jpg");
        } else {
          data.append(el.name, blob, "photo.jpg");
          if (thumb) data.append("thumbnail", thumb, "photo.thumb.jpg");
        }
      } else if (el.name.startsWith("answer:")) {
        if ((el.type === "radio" || el.type === "checkbox") && !el.checked) continue;
        answers[el.name.slice(7)] = el.type === "number" ? Number(el.value) : el.value;
      } else if (el.type === "checkbox") {
        if (el.checked) data.append(el.name, el.value);
      } else {
        data.append(el.name, el.value);
      }
    }
    if (form.dataset.record === "round") data.append("answers", JSON.stringify(answers));
    if (refusal) refusal.hidden = true;
    if (button) button.disabled = true;
    try {
      const r = await fetch(form.dataset.api, {
        method: "POST", credentials: "same-origin", body: data,
        headers: { "X-CSRF-Token": csrf(), "Idempotency-Key": newKey() },
      });
      if (r.ok && form.dataset.done) {  // a report: said thank you, the form emptied
        form.reset();
        const sent = form.querySelector("[data-report-sent]");
        if (sent) sent.hidden = false;
        return;
      }
      if (r.ok) { location.reload(); return; }
      if (r.status === 401) { location.href = `/app/login?next=${encodeURIComponent(location.pathname)}`; return; }
      const answer = await r.json().catch(() => ({ detail: r.statusText }));
      if (refusal) { refusal.textContent = detail(answer); refusal.hidden = false; }
    } catch {
      if (refusal) { refusal.textContent = body.dataset.noConnection; refusal.hidden = false; }
    } finally {
      if (button) button.disabled = false;
    }
  }

  async function signIn(form) {
    const refusal = form.querySelector("[data-refusal]");
    const given = fields(form);
    const r = await fetch("/auth/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(given),
    });
    const ours = given.next && (given.next.startsWith("/app/") || given.next === "/governance")
      && !given.next.includes("//");
    if (r.ok) { location.href = ours ? given.next : "/app/"; return; }
    const answer = await r.json().catch(() => ({ detail: r.statusText }));
    refusal.textContent = detail(answer);
    refusal.hidden = false;
  }

  function countdowns() {
    const now = Date.now() / 1000;
    for (const el of document.querySelectorAll("[data-deadline]")) {
      const left = Number(el.dataset.deadline) - now;
      const s = Math.abs(left);
      const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
      const span = h ? `${h} h ${String(m).padStart(2, "0")} min` : `${m} min ${String(sec).padStart(2, "0")} s`;
      el.textContent = left >= 0 ? `${span} ${body.dataset.left}` : `${body.dataset.overdue} ${span}`;
      el.classList.toggle("late", left < 0);
    }
  }

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (form.dataset.record) { e.preventDefault(); record(form); }
    else if (form.dataset.api) { e.preventDefault(); act(form); }
    else if (form.dataset.signin !== undefined) { e.preventDefault(); signIn(form); }
  });
  document.addEventListener("change", (e) => {
    const input = e.target;
    if (input.dataset && input.dataset.photo !== undefined) upload(input.form, input);
  });
  document.addEventListener("click", async (e) => {
    if (e.target.dataset && e.target.dataset.signout !== undefined) {
      await fetch("/auth/logout", { method: "POST", credentials: "same-origin" });
      location.href = "/app/login";
    }
  });
  window.addEventListener("online", flush);
  setInterval(flush, 5000);  // and now and then: a phone does not always say it is back
  countdowns();
  setInterval(countdowns, 1000);
  if (outbox().some(mine)) note(body.dataset.savedOffline);
  flush();
})();
