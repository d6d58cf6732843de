// docenrich page behaviour: uploads with progress, the live document list, status polling.
// Text from PDFs and filenames only ever reaches the page through textContent.
"use strict";

(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const FINISHED = new Set(["ready", "failed", "cancelled"]);
  const PARALLEL_UPLOADS = 2;

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    node.append(...children.filter(Boolean));
    return node;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function setBar(fill, fraction) {
    const value = Math.max(0, Math.min(1, Number(fraction) || 0));
    fill.style.width = `${Math.round(value * 100)}%`;
    fill.parentElement?.setAttribute("aria-valuenow", String(Math.round(value * 100)));
  }

  function makeBar(label) {
    const fill = el("div", { className: "bar-fill" });
    const bar = el("div", { className: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" }, fill);
    return [bar, fill];
  }

  // The pipeline's own progress counts finished page batches; the stage says where it is.
  function pipelineFraction(doc) {
    if (doc.state === "ready") return 1;
    if (doc.state === "queued") return 0.04;
    return 0.1 + 0.9 * (doc.progress || 0);
  }

  function describe(doc) {
    switch (doc.state) {
      case "ready": return `Ready · ${plural(doc.snippet_count, "snippet")}` + ((doc.notes || []).length ? ` · ${doc.notes.join("; ")}` : "");
      case "failed": return doc.error || "Processing failed.";
      case "cancelled": return "Cancelled. Upload it again to process it.";
      case "queued": return "Queued, waiting for a worker…";
      default: {
        const word = doc.state === "extracting" ? "Extracting text" : "Embedding";
        const stage = doc.stage || "";
        if (!stage) return `${word}…`;
        // "Extracting pages 1–8 of 40" already says what is happening; "Queued 2 of 5 batches" does not.
        return stage.toLowerCase().startsWith(doc.state.slice(0, 5)) ? stage : `${word} · ${stage}`;
      }
    }
  }

  async function api(method, url) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
    });
    let body = {};
    try { body = await response.json(); } catch { /* not JSON: keep the status */ }
    if (!response.ok) {
      const error = new Error(body.error || `The server answered ${response.status}.`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ------------------------------------------------------------------ home page

  function initHome() {
    const list = document.getElementById("documents");
    const count = document.getElementById("doc-count");
    const uploads = document.getElementById("uploads");
    const input = document.getElementById("file-input");
    const zone = document.getElementById("dropzone");
    let refreshTimer = null;

    function docRow(doc) {
      const link = el("a", { className: "doc-name", href: doc.url, text: doc.filename });
      const meta = el("div", { className: "doc-meta" },
        el("span", { className: `badge state-${doc.state}`, text: doc.state }),
        doc.pages ? el("span", { text: plural(doc.pages, "page") }) : null,
        doc.state === "ready" ? el("span", { text: plural(doc.snippet_count, "snippet") }) : null,
        FINISHED.has(doc.state) ? null : el("span", { text: describe(doc) }),
        doc.has_text_layer === false ? el("span", { text: "scanned (OCR)" }) : null,
        doc.title && doc.title !== doc.filename ? el("span", { className: "doc-title-meta", text: doc.title }) : null,
        ...(doc.collections || []).map((name) => el("a", { className: "badge badge-collection", href: `/collections/${encodeURIComponent(name)}`, text: name })),
      );
      const remove = el("button", { className: "button button-small button-danger", type: "button", text: "Delete" });
      remove.addEventListener("click", () => removeDocument(doc, remove));
      const row = el("div", { className: "doc-row", "data-id": doc.id, "data-state": doc.state },
        el("div", {}, link, meta),
        el("div", { className: "doc-actions" },
          doc.state === "ready" ? el("a", { className: "button button-small button-quiet", href: `/search?document=${encodeURIComponent(doc.id)}`, text: "Search" }) : null,
          remove),
      );
      if (doc.state === "failed") row.append(el("p", { className: "doc-error", text: doc.error || "Processing failed." }));
      else if (doc.state === "cancelled") row.append(el("p", { className: "muted", text: describe(doc) }));
      else if (doc.state === "ready" && (doc.notes || []).length) {
        for (const note of doc.notes) row.append(el("p", { className: "doc-note", text: note }));
      } else if (doc.state !== "ready") {
        const [bar, fill] = makeBar(`Progress of ${doc.filename}`);
        setBar(fill, pipelineFraction(doc));
        row.append(bar);
      }
      return row;
    }

    function render(documents) {
      list.replaceChildren(...documents.map(docRow));
      count.textContent = documents.length ? plural(documents.length, "document") : "";
      clearTimeout(refreshTimer);
      // Poll quickly while something is in progress, lazily otherwise (other tabs may upload).
      const busy = documents.some((d) => !FINISHED.has(d.state));
      refreshTimer = setTimeout(refresh, busy ? 2000 : 15000);
    }

    async function refresh() {
      try {
        render((await api("GET", "/api/documents")).documents);
      } catch (error) {
        clearTimeout(refreshTimer);
        refreshTimer = setTimeout(refresh, 5000);
      }
    }

    async function removeDocument(doc, button) {
      if (!window.confirm(`Delete “${doc.filename}” with its snippets?`)) return;
      button.disabled = true;
      try {
        await api("DELETE", `/api/documents/${encodeURIComponent(doc.id)}`);
      } catch (error) {
        window.alert(error.message);
      }
      refresh();
    }

    // Uploads: a few at a time, each with its own row and bar.
    const waiting = [];
    let active = 0;

    function pump() {
      while (active < PARALLEL_UPLOADS && waiting.length) {
        active += 1;
        send(waiting.shift()).finally(() => { active -= 1; pump(); });
      }
    }

    function enqueue(files) {
      for (const file of files) {
        const status = el("span", { className: "upload-status", text: "Waiting…" });
        const [bar, fill] = makeBar(`Progress of ${file.name}`);
        const row = el("li", { className: "upload", "data-state": "waiting" },
          el("span", { className: "upload-name", text: file.name }), status, bar);
        uploads.prepend(row);
        waiting.push({ file, row, status, fill });
      }
      pump();
    }

    function finish(item, state, text) {
      item.row.dataset.state = state;
      item.status.textContent = text;
    }

    function send(item) {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", "/api/documents");
        xhr.setRequestHeader("Accept", "application/json");
        xhr.setRequestHeader("X-CSRF-Token", csrf);
        item.row.dataset.state = "uploading";
        item.status.textContent = "Uploading 0%";
        xhr.upload.addEventListener("progress", (event) => {
          if (!event.lengthComputable) return;
          const fraction = event.loaded / event.total;
          setBar(item.fill, fraction);
          item.status.textContent = fraction < 1 ? `Uploading ${Math.floor(fraction * 100)}%` : "Checking the file…";
        });
        xhr.addEventListener("load", () => {
          let body = {};
          try { body = JSON.parse(xhr.responseText); } catch { /* keep the status */ }
          const doc = body.documents?.[0];
          if (xhr.status === 202 && doc) {
            item.row.dataset.id = doc.id;
            setBar(item.fill, 0);
            follow(item, doc, doc.duplicate);
            refresh();
          } else {
            setBar(item.fill, 1);
            finish(item, "failed", body.error || `The upload failed (the server answered ${xhr.status}).`);
          }
          resolve();
        });
        xhr.addEventListener("error", () => {
          finish(item, "failed", "The upload failed: the server could not be reached.");
          resolve();
        });
        const form = new FormData();
        form.append("file", item.file, item.file.name);
        const collection = document.getElementById("collection-input")?.value.trim();
        if (collection) form.append("collection", collection);
        xhr.send(form);
      });
    }

    function follow(item, doc, duplicate) {
      const show = (d) => {
        setBar(item.fill, pipelineFraction(d));
        const note = duplicate && d.state === "ready" ? "Already uploaded · " : "";
        finish(item, d.state, note + describe(d));
      };
      show(doc);
      if (FINISHED.has(doc.state)) return;
      const timer = setInterval(async () => {
        try {
          const current = await api("GET", `/api/documents/${encodeURIComponent(doc.id)}`);
          show(current);
          if (FINISHED.has(current.state)) { clearInterval(timer); refresh(); }
        } catch (error) {
          if (error.status === 404) { clearInterval(timer); finish(item, "failed", "This document was deleted."); }
        }
      }, 1000);
    }

    input.addEventListener("change", () => { enqueue([...input.files]); input.value = ""; });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("dragging"); });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      enqueue([...(event.dataTransfer?.files || [])]);
    });
    // A file dropped beside the zone would otherwise make the browser open it and leave the page.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());

    render(JSON.parse(document.getElementById("initial-documents").textContent));
  }

  // ------------------------------------------------------------------ document page

  function initDocument() {
    const head = document.getElementById("doc-head");
    if (!head || FINISHED.has(head.dataset.state)) return;
    const stage = document.getElementById("doc-stage");
    const fill = head.querySelector(".bar-fill");
    const timer = setInterval(async () => {
      try {
        const doc = await api("GET", `/api/documents/${encodeURIComponent(head.dataset.id)}`);
        if (stage) stage.textContent = describe(doc);
        if (fill) setBar(fill, pipelineFraction(doc));
        if (FINISHED.has(doc.state)) { clearInterval(timer); window.location.reload(); }
      } catch (error) {
        if (error.status === 404) { clearInterval(timer); window.location.href = "/"; }
      }
    }, 1500);
  }

  // ------------------------------------------------------------------ collection, cited page, status

  function initCollection() {
    const head = document.getElementById("collection-head");
    const button = document.getElementById("delete-collection");
    if (!head || !button) return;
    button.addEventListener("click", async () => {
      const name = head.dataset.name;
      if (!window.confirm(`Delete the collection “${name}” and its documents that are in no other collection?`)) return;
      button.disabled = true;
      try {
        await api("DELETE", `/api/collections/${encodeURIComponent(name)}`);
        window.location.href = "/collections";
      } catch (error) {
        button.disabled = false;
        window.alert(error.message);
      }
    });
  }

  function initCited() {
    const cited = document.querySelector(".cited-snippet.is-cited");
    if (cited) cited.scrollIntoView({ block: "nearest" });
    const box = document.querySelector(".box-cited");
    if (box) box.scrollIntoView({ block: "center" });
  }

  function initStatus() {
    // A page people leave open: reload while the tab is visible.
    setInterval(() => { if (document.visibilityState === "visible") window.location.reload(); }, 10000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const fill of document.querySelectorAll("[data-progress]")) setBar(fill, fill.dataset.progress);
    const page = document.body.dataset.page;
    if (page === "home") initHome();
    if (page === "document") initDocument();
    if (page === "collection") initCollection();
    if (page === "cited") initCited();
    if (page === "status") initStatus();
  });
})();
