// veil playground: the page's behaviour. Plain browser JavaScript, no libraries, no network beyond this
// server. Every decision comes from the server (veil's own engine); this file only edits and displays.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = JSON.parse(document.body.dataset.state);
  const texts = Object.assign({}, state.files);
  const names = Object.keys(texts).sort();
  let current = names.includes(state.open) ? state.open : names[0];
  let diagnostics = [];
  let seq = 0;
  let timer = null;
  let lastCase = null;

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function short(name) {
    const parts = name.split("/");
    return parts[parts.length - 1];
  }
  function setStatus(text, kind) {
    const s = $("status");
    s.textContent = text;
    s.className = kind || "";
  }

  // ------------------------------------------------------------------ editor
  function renderTabs() {
    const tabs = $("tabs");
    tabs.replaceChildren();
    for (const name of names) {
      const errs = diagnostics.filter((d) => d.file === name && d.severity === "error").length;
      const b = el("button", {
        type: "button", role: "tab", id: "tab-" + short(name), "aria-selected": String(name === current),
        title: name, class: errs ? "has-error" : "", onclick: () => openFile(name),
      }, short(name) + (errs ? " (" + errs + ")" : ""));
      tabs.append(b);
    }
  }
  function openFile(name, line, col) {
    current = name;
    const ed = $("editor");
    ed.value = texts[name];
    ed.setAttribute("aria-label", "Policy file " + name);
    renderTabs();
    renderGutter();
    if (line) goTo(line, col || 1);
  }
  function goTo(line, col) {
    const ed = $("editor");
    const lines = ed.value.split("\n");
    let pos = 0;
    for (let i = 0; i < Math.min(line - 1, lines.length); i++) pos += lines[i].length + 1;
    pos += Math.max(0, col - 1);
    ed.focus();
    ed.setSelectionRange(pos, pos);
    ed.scrollTop = Math.max(0, (line - 5) * 20);
    syncGutter();
  }
  function renderGutter() {
    const gutter = $("gutter");
    const count = $("editor").value.split("\n").length;
    const marks = {};
    for (const d of diagnostics) {
      if (d.file !== current || !d.line) continue;
      const prev = marks[d.line];
      if (!prev || (prev.severity !== "error" && d.severity === "error")) marks[d.line] = d;
    }
    const hits = new Set((window.__hits || []).filter((h) => h.file === current).map((h) => h.line));
    const frag = document.createDocumentFragment();
    for (let i = 1; i <= count; i++) {
      const m = marks[i];
      const ln = el("div", { class: "ln" + (m ? " " + m.severity : "") + (hits.has(i) ? " hit" : ""), "data-line": String(i) });
      if (m) {
        ln.append(el("span", { class: "marker " + m.severity, "data-line": String(i), title: m.code + ": " + m.message },
          m.severity === "error" ? "●" : "▲"));
        ln.title = m.code + ": " + m.message;
      }
      ln.append(String(i));
      frag.append(ln);
    }
    gutter.replaceChildren(frag);
    syncGutter();
  }
  function syncGutter() {
    $("gutter").scrollTop = $("editor").scrollTop;
  }

  // ------------------------------------------------------------------ example form
  function fillForm(ex) {
    $("method").value = ex.method;
    $("path").value = ex.path;
    const caller = $("caller");
    caller.replaceChildren(el("option", { value: "" }, "(no key)"));
    for (const c of state.callers) caller.append(el("option", { value: c }, c));
    caller.value = ex.caller;
    const dl = $("purposes");
    dl.replaceChildren(...state.purposes.map((p) => el("option", { value: p })));
    $("purpose").value = ex.purpose;
    const consent = $("consent");
    consent.replaceChildren();
    for (const key of state.consent_keys) {
      const id = "consent-" + key.replace(/[^A-Za-z0-9_-]/g, "_");
      const sel = el("select", { id: id, "data-key": key });
      for (const s of state.states) sel.append(el("option", { value: s }, s));
      sel.value = (ex.consent || {})[key] || "given";
      consent.append(el("label", { for: id }, key), sel);
    }
    if (!state.consent_keys.length) consent.append(el("span", { class: "muted" }, "The policy asks for no consent."));
    $("status-code").value = ex.status;
    $("body").value = ex.body;
    $("now").value = ex.now;
    $("case-name").value = ex.name;
  }
  function collectExample() {
    const headers = [];
    if ($("gpc").checked) headers.push(["Sec-GPC", "1"]);
    for (const line of $("headers").value.split("\n")) {
      const i = line.indexOf(":");
      if (i > 0) headers.push([line.slice(0, i).trim(), line.slice(i + 1).trim()]);
    }
    const consent = {};
    for (const sel of $("consent").querySelectorAll("select")) consent[sel.dataset.key] = sel.value;
    return {
      name: $("case-name").value.trim() || "playground example",
      method: $("method").value, path: $("path").value.trim(), caller: $("caller").value,
      purpose: $("purpose").value.trim(), headers: headers, consent: consent,
      consent_subjects: $("consent-subjects").value, consent_unavailable: $("store-down").checked,
      status: Number($("status-code").value) || 200, body: $("body").value, now: $("now").value.trim(),
    };
  }

  // ------------------------------------------------------------------ server
  async function post(path, payload) {
    const r = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json", "X-Veil-Playground": state.token },
      body: JSON.stringify(payload),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.detail || ("HTTP " + r.status));
    return data;
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(evaluate, 200);
  }
  async function evaluate() {
    const mine = ++seq;
    document.body.dataset.pending = String(mine);
    let data;
    try {
      data = await post("/api/evaluate", { files: texts, example: collectExample() });
    } catch (e) {
      if (mine === seq) setStatus("The playground server did not answer: " + e.message, "error");
      return;
    }
    if (mine !== seq) return; // a later edit has been sent: show only the newest answer
    render(data);
    document.body.dataset.evaluated = String(mine);
    delete document.body.dataset.pending;
  }

  // ------------------------------------------------------------------ output
  function locButton(loc, text) {
    if (!loc) return document.createTextNode("");
    return el("button", { type: "button", class: "loc", onclick: () => openFile(loc.file, loc.line, loc.col) },
      text || (short(loc.file) + ":" + loc.line + ":" + loc.col));
  }
  function renderDiagnostics() {
    const list = $("diagnostics");
    list.replaceChildren();
    if (!diagnostics.length) list.append(el("li", { class: "muted" }, "No errors or warnings."));
    for (const d of diagnostics) {
      const where = d.file ? short(d.file) + ":" + d.line + ":" + d.col + ": " : "";
      const text = where + d.severity + "[" + d.code + "]: " + d.message + (d.hint ? "\n  hint: " + d.hint : "");
      list.append(el("li", { class: d.severity },
        el("button", { type: "button", onclick: () => d.file && openFile(d.file, d.line, d.col) }, text)));
    }
  }
  function renderDiff(lines) {
    const pre = $("diff");
    pre.replaceChildren();
    if (!lines.length) { pre.textContent = "(no change)"; return; }
    for (const line of lines.slice(2)) {
      const cls = line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "";
      pre.append(cls ? el("span", { class: cls }, line) : document.createTextNode(line + "\n"));
    }
  }
  function render(data) {
    diagnostics = data.diagnostics || [];
    renderDiagnostics();
    window.__hits = [];
    const badge = $("decision");
    if (data.example_error) {
      badge.textContent = "invalid example";
      badge.className = "badge invalid";
      $("reason").textContent = "";
      $("title").textContent = data.example_error;
      renderTabs(); renderGutter();
      return;
    }
    if (!data.ok) {
      badge.textContent = "policy has errors";
      badge.className = "badge invalid";
      $("reason").textContent = "";
      $("title").textContent = "Fix the errors marked in the editor; veil would not load this policy.";
      $("rules").replaceChildren(); $("response").textContent = ""; $("diff").textContent = "";
      $("fields").replaceChildren();
      renderTabs(); renderGutter();
      return;
    }
    badge.textContent = data.decision;
    badge.className = "badge " + data.decision;
    $("reason").textContent = data.reason + " (" + data.status + ")";
    $("title").textContent = data.title || (data.route ? "route " + data.route + " for " + data.purpose : "");
    const rules = $("rules");
    rules.replaceChildren();
    for (const r of data.rules) {
      if (!r.file) continue;
      window.__hits.push(r);
      rules.append(el("li", {}, "because of ", locButton(r), " ", el("code", {}, r.statement)));
    }
    const resp = data.response;
    const head = "HTTP " + resp.status + "\n" + Object.entries(resp.headers).map(([k, v]) => k + ": " + v).join("\n");
    $("response").textContent = head + "\n\n" + (resp.body === null || resp.body === undefined ? "" : JSON.stringify(resp.body, null, 2));
    renderDiff(data.diff || []);
    const tbody = $("fields");
    tbody.replaceChildren();
    for (const f of data.fields) {
      if (f.location) window.__hits.push(f.location);
      tbody.append(el("tr", { "data-path": f.path, "data-fate": f.fate },
        el("td", {}, el("code", {}, f.path)),
        el("td", { class: "fate-" + f.fate }, f.fate + (f.category ? " @" + f.category : "")),
        el("td", {}, locButton(f.location), " ", el("code", {}, f.statement || ""))));
    }
    lastCase = data.case;
    renderTabs(); renderGutter();
  }

  // ------------------------------------------------------------------ actions
  async function saveCase() {
    setStatus("Saving…");
    try {
      const r = await post("/api/save-case", { files: texts, example: collectExample() });
      let msg = "Saved to " + r.file + ":" + r.line + " (" + r.cases + " case(s)). Run: veil test";
      if (r.unsaved_policy_edits.length) msg += " — the policy edits are not saved yet: veil test reads the files on disk";
      setStatus(msg, r.unsaved_policy_edits.length ? "error" : "ok");
    } catch (e) {
      setStatus("Not saved: " + e.message, "error");
    }
  }
  async function saveFiles() {
    try {
      const r = await post("/api/save-files", { files: texts });
      setStatus(r.written.length ? "Wrote " + r.written.join(", ") : "No file changed.", "ok");
    } catch (e) {
      setStatus("Not saved: " + e.message, "error");
    }
  }

  // ------------------------------------------------------------------ wiring
  const ed = $("editor");
  ed.addEventListener("input", () => { texts[current] = ed.value; renderGutter(); schedule(); });
  ed.addEventListener("scroll", syncGutter);
  ed.addEventListener("keydown", (e) => {
    if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && ed.dataset.tabIndents === "1") {
      e.preventDefault();
      ed.setRangeText("  ", ed.selectionStart, ed.selectionEnd, "end");
      texts[current] = ed.value; schedule();
    }
    if (e.key === "Escape") ed.dataset.tabIndents = "0"; // Escape, then Tab: leave the editor by keyboard
  });
  ed.addEventListener("focus", () => { ed.dataset.tabIndents = "1"; });
  for (const id of ["method", "path", "caller", "purpose", "gpc", "headers", "store-down", "consent-subjects",
                    "status-code", "body", "now"]) {
    $(id).addEventListener("input", schedule);
    $(id).addEventListener("change", schedule);
  }
  $("consent").addEventListener("change", schedule);
  $("save-case").addEventListener("click", saveCase);
  $("save-files").addEventListener("click", saveFiles);

  fillForm(state.example);
  openFile(current);
  evaluate();
  window.veilPlayground = { texts: texts, lastCase: () => lastCase };
})();
