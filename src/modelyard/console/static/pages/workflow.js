// /workflows/new and /workflows/{agent_id}: an agent's graph on a Drawflow canvas, its nodes' properties in a side
// panel. Reads GET /api/catalog (models, tasks, each task's parameters) and GET /api/agents/{id}; writes
// POST /api/agents/validate, POST /api/agents, PATCH /api/agents/{id}, POST /api/agents/{id}/run, and watches the run
// through GET /api/runs/{id}/events. The document format is docs/agents.md's; node positions go to `dag.layout`.
"use strict";

document.addEventListener("alpine:init", () => {
  const NODE_ID = /^[A-Za-z0-9_-]{1,64}$/;
  const FINAL = ["succeeded", "failed", "cancelled"];
  const STATES = ["pending", "queued", "running", "retrying", "succeeded", "cached", "failed", "skipped", "cancelled"];
  const HIDDEN = ["stream", "stream_options"]; // a node cannot stream
  const LONG_TEXT = ["prompt", "input", "negative_prompt", "instructions", "query", "suffix", "text_1", "text_2"];
  // what a node's result holds, by task: offered as references (a reference may read any path of the result)
  const RESULT_PATHS = {
    chat: ["choices[0].message.content"], completion: ["choices[0].text"], embedding: ["data[0].embedding"],
    "text-to-image": ["images[0].url"], "image-to-image": ["images[0].url"], "text-to-video": ["video.url"],
    "image-to-video": ["video.url"], speech: ["audio.url"], transcription: ["text"], translation: ["text"],
  };
  const COL = 270, ROW = 150, PAD = 40; // the layout grid for nodes without a saved position

  let df = null; // the Drawflow editor: kept out of Alpine's reactive proxies
  const byDf = {}; // Drawflow's node id -> our node id
  let quiet = 0; // > 0 while the page itself changes connections (its events are not the person's)
  let lastPointerInCanvas = false;
  let stream = null; // the run's EventSource
  let fitted = true; // the view is as fit() left it (the person has not panned or zoomed since): resizes refit

  // fetch with the session's CSRF header, keeping the whole body of an error (node_errors)
  async function call(path, method, body) {
    const headers = { "Content-Type": "application/json" };
    if (My.csrf) headers["X-CSRF-Token"] = My.csrf;
    const r = await fetch(path, { method, headers, body: JSON.stringify(body), credentials: "same-origin" });
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: { message: text } }; }
    return { ok: r.ok, status: r.status, data };
  }

  function inputValue(text) {
    const t = (text || "").trim();
    if (/^[[{]/.test(t) || /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(t) || /^(true|false|null)$/.test(t)) {
      try { return JSON.parse(t); } catch (_) { /* text after all */ }
    }
    return text || "";
  }

  // every string in a JSON value
  function strings(v, out = []) {
    if (typeof v === "string") out.push(v);
    else if (Array.isArray(v)) v.forEach((x) => strings(x, out));
    else if (v && typeof v === "object") Object.values(v).forEach((x) => strings(x, out));
    return out;
  }
  // `${nodes.<id>.result…}` and `${input.<name>…}` named in a text (`$${` is a literal)
  function named(text, root) {
    const re = root === "nodes" ? /(?<!\$)\$\{\s*nodes\.([A-Za-z0-9_-]+)\.result/g : /(?<!\$)\$\{\s*input\.([A-Za-z0-9_-]+)/g;
    return Array.from(String(text).matchAll(re), (m) => m[1]);
  }
  function typesOf(p) { return [].concat(p.type || "string"); }

  function blank(id, kind) {
    return {
      id, kind, df: null, description: "", model_id: "", task: "", payloadKey: "payload",
      prompt: "", system: "", fields: {}, jsonMode: false, payloadText: "{}", showAll: false,
      outputs: "", mapOutputs: "", cache: false, timeout: "", maxAttempts: "", backoff: "",
      items: "", maxConcurrency: "", tolerance: "",
      errors: [], state: null, output: null, runError: null, progress: null,
    };
  }

  Alpine.data("workflowPage", () => ({
    agentId: My.params.agent_id || null, version: null, name: "", savedName: "", description: "",
    catalog: [], nodes: {}, order: [], edges: [], selected: null, declaredInputs: [], newInput: "",
    refChoice: "", lastTarget: null, dirty: false, busy: false, loadError: "", globalErrors: [], globalTitle: "",
    okNotice: "", run: null, runInputs: [], runValues: {}, runError: "",

    async init() {
      this.startCanvas();
      try {
        this.catalog = (await My.api("/api/catalog")).data;
      } catch (e) {
        My.toast("The model catalog did not load: " + e.message, "error");
      }
      if (this.agentId) await this.load();
      window.addEventListener("beforeunload", () => { if (stream) stream.close(); });
    },

    get node() { return this.selected ? this.nodes[this.selected] || null : null; },

    // ---------------------------------------------------------------- the canvas

    startCanvas() {
      const el = document.getElementById("wf-canvas");
      df = new Drawflow(el);
      df.reroute = false;
      const self = this;
      // Delete acts on the canvas only: not while the person types in the side panel with a node selected
      df.key = function (e) {
        this.dispatch("keydown", e);
        if (e.key !== "Delete" && !(e.key === "Backspace" && e.metaKey)) return;
        const active = document.activeElement;
        const inCanvas = el.contains(active) || (active === document.body && lastPointerInCanvas);
        if (!inCanvas) return;
        if (this.connection_selected != null) this.removeConnection();
        else if (self.selected) self.deleteNode(self.selected);
      };
      df.start();
      document.addEventListener("pointerdown", (e) => { lastPointerInCanvas = el.contains(e.target); }, true);
      el.addEventListener("focusin", (e) => {
        const n = e.target.closest && e.target.closest(".drawflow-node");
        if (n && n.dataset.nodeId) self.select(n.dataset.nodeId, false);
      });
      df.on("nodeSelected", (dfId) => { if (byDf[dfId]) self.select(byDf[dfId], false); });
      df.on("nodeMoved", () => { self.dirty = true; });
      df.on("translate", () => { fitted = false; });
      df.on("zoom", () => { fitted = false; });
      let width = el.clientWidth;
      new ResizeObserver(() => {
        if (el.clientWidth && el.clientWidth !== width && fitted) self.fit();
        width = el.clientWidth;
      }).observe(el);
      df.on("nodeRemoved", (dfId) => self.nodeGone(byDf[dfId], dfId));
      df.on("connectionCreated", (c) => self.connected(byDf[c.output_id], byDf[c.input_id]));
      df.on("connectionRemoved", (c) => self.disconnected(byDf[c.output_id], byDf[c.input_id]));
    },

    place(n, x, y) {
      n.df = df.addNode(n.kind, 1, 1, x, y, "wf-node wf-" + n.kind, { id: n.id }, "");
      byDf[n.df] = n.id;
      const el = document.getElementById("node-" + n.df);
      el.tabIndex = 0;
      el.setAttribute("role", "group");
      this.render(n.id);
    },

    // a node on the canvas: id, kind, model · task, its state in the last run, its problems (words and colour)
    render(id) {
      const n = this.nodes[id];
      if (!n || n.df === null) return;
      const el = document.getElementById("node-" + n.df);
      if (!el) return;
      el.dataset.nodeId = id;
      el.classList.toggle("has-errors", n.errors.length > 0);
      STATES.forEach((s) => el.classList.toggle("st-" + s, n.state === s));
      el.classList.toggle("is-current", id === this.selected);
      const mk = (tag, cls, text) => {
        const x = document.createElement(tag);
        if (cls) x.className = cls;
        if (text !== undefined) x.textContent = text;
        return x;
      };
      const head = mk("div", "wf-n-head");
      head.append(mk("strong", "wf-n-id", id), mk("span", "badge " + (n.kind === "map" ? "info" : ""), n.kind));
      const sub = mk("div", "wf-n-sub", (n.model_id || "no model") + " · " + (n.task || "no task"));
      const parts = [head, sub];
      if (n.state) {
        const st = mk("div", "wf-n-state");
        st.append(mk("span", "badge " + n.state, n.state));
        if (n.progress && n.progress.total !== null && n.progress.total !== undefined) {
          st.append(" ", mk("span", "wf-n-progress", `${n.progress.done}/${n.progress.total} items` +
            (n.progress.failed ? `, ${n.progress.failed} failed` : "")));
        }
        parts.push(st);
      }
      if (n.errors.length) {
        const ul = mk("ul", "wf-n-errors");
        n.errors.slice(0, 3).forEach((e) => ul.append(mk("li", "", e.message)));
        if (n.errors.length > 3) ul.append(mk("li", "", `and ${n.errors.length - 3} more`));
        parts.push(ul);
      }
      el.querySelector(".drawflow_content_node").replaceChildren(...parts);
      el.setAttribute("aria-label", `Node ${id}: ${n.kind}, ${n.model_id || "no model"}, ${n.task || "no task"}` +
        (n.state ? `, ${n.state}` : "") + (n.errors.length ? `, ${n.errors.length} problem(s)` : ""));
    },
    renderAll() { this.order.forEach((id) => this.render(id)); },

    zoom(dir) { if (dir > 0) df.zoom_in(); else df.zoom_out(); fitted = false; },

    // the whole graph in view (Drawflow scales its canvas around the centre)
    fit() {
      const el = document.getElementById("wf-canvas");
      const data = df.drawflow.drawflow.Home.data;
      const ids = Object.keys(data);
      if (!ids.length) return;
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const k of ids) {
        const box = document.getElementById("node-" + k);
        const w = box ? box.offsetWidth : 220, h = box ? box.offsetHeight : 90;
        x0 = Math.min(x0, data[k].pos_x); y0 = Math.min(y0, data[k].pos_y);
        x1 = Math.max(x1, data[k].pos_x + w); y1 = Math.max(y1, data[k].pos_y + h);
      }
      const W = el.clientWidth, H = el.clientHeight;
      const z = Math.max(0.4, Math.min(1, (W - 40) / (x1 - x0), (H - 40) / (y1 - y0)));
      df.zoom = z;
      df.zoom_last_value = z;
      df.canvas_x = -((x0 + x1) / 2 - W / 2) * z;
      df.canvas_y = -((y0 + y1) / 2 - H / 2) * z;
      df.precanvas.style.transform = `translate(${df.canvas_x}px, ${df.canvas_y}px) scale(${z})`;
      fitted = true;
    },

    // ---------------------------------------------------------------- nodes

    freeId(kind) {
      for (let i = 1; ; i++) {
        const id = (kind === "map" ? "map" : "node") + i;
        if (!this.nodes[id]) return id;
      }
    },

    addNode(kind) {
      const n = blank(this.freeId(kind), kind);
      if (kind === "map") n.items = "";
      this.nodes[n.id] = n;
      this.order.push(n.id);
      // the first free cell of a grid over the part of the canvas in view, in canvas coordinates
      const el = document.getElementById("wf-canvas");
      const cols = Math.max(1, Math.floor((el.clientWidth - PAD / 2) / COL));
      const z = df.zoom || 1;
      const cx = el.clientWidth / 2, cy = el.clientHeight / 2;
      const taken = Object.values(df.drawflow.drawflow.Home.data);
      let x = 0, y = 0;
      for (let k = 0; k < 500; k++) {
        const sx = PAD / 2 + (k % cols) * COL, sy = PAD / 2 + Math.floor(k / cols) * ROW;
        // screen = centre + (pos - centre) * zoom + translate  =>  pos = (screen - translate - centre) / zoom + centre
        x = (sx - df.canvas_x - cx) / z + cx;
        y = (sy - df.canvas_y - cy) / z + cy;
        if (!taken.some((d) => Math.abs(d.pos_x - x) < COL - 40 && Math.abs(d.pos_y - y) < ROW - 40)) break;
      }
      this.place(n, x, y);
      this.select(n.id);
      this.dirty = true;
      this.$nextTick(() => { const f = document.getElementById("wf-model"); if (f) f.focus(); });
    },

    select(id, scroll = true) {
      const before = this.selected;
      this.selected = id && this.nodes[id] ? id : null;
      const refs = this.node ? this.refs(this.node) : [];
      if (!refs.includes(this.refChoice)) this.refChoice = refs[0] || "";
      this.lastTarget = null;
      if (before) this.render(before);
      if (this.selected) this.render(this.selected);
      if (scroll && this.selected && window.matchMedia("(max-width: 900px)").matches) {
        this.$nextTick(() => { const h = document.getElementById("wf-node-h"); if (h) h.scrollIntoView({ block: "nearest" }); });
      }
    },

    deleteNode(id) {
      const n = this.nodes[id];
      if (n) df.removeNodeId("node-" + n.df); // Drawflow says nodeRemoved: nodeGone does the rest
    },

    nodeGone(id, dfId) {
      delete byDf[dfId];
      if (!id || !this.nodes[id]) return;
      delete this.nodes[id];
      this.order = this.order.filter((x) => x !== id);
      this.edges = this.edges.filter(([a, b]) => a !== id && b !== id);
      if (this.selected === id) this.select(this.order[0] || null, false);
      this.dirty = true;
      My.toast(`Deleted node ${id}.`);
    },

    rename(input) {
      const n = this.node;
      const old = n.id, nw = input.value.trim();
      if (nw === old) return;
      if (!NODE_ID.test(nw) || this.nodes[nw]) {
        My.toast(this.nodes[nw] ? `There is a node '${nw}' already.` : "A node id is 1–64 letters, digits, '_' or '-'.", "error");
        input.value = old;
        return;
      }
      const re = new RegExp("(\\$\\{\\s*nodes\\.)" + old.replace(/-/g, "\\-") + "(\\.result)", "g");
      const fix = (s) => (typeof s === "string" ? s.replace(re, "$1" + nw + "$2") : s);
      for (const m of Object.values(this.nodes)) {
        m.prompt = fix(m.prompt); m.system = fix(m.system); m.payloadText = fix(m.payloadText); m.items = fix(m.items);
        for (const k of Object.keys(m.fields)) m.fields[k] = fix(m.fields[k]);
      }
      n.id = nw;
      this.nodes[nw] = n;
      delete this.nodes[old];
      byDf[n.df] = nw;
      df.updateNodeDataFromId(n.df, { id: nw });
      this.order = this.order.map((x) => (x === old ? nw : x));
      this.edges = this.edges.map(([a, b]) => [a === old ? nw : a, b === old ? nw : b]);
      this.selected = nw;
      this.dirty = true;
      this.renderAll();
    },

    // the side panel changed something of the selected node
    touch() {
      const n = this.node;
      if (!n) return;
      this.dirty = true;
      this.okNotice = "";
      this.render(n.id);
      // a reference to a node is a dependency: draw it
      for (const up of new Set(this.texts(n).flatMap((t) => named(t, "nodes")))) {
        if (this.nodes[up] && up !== n.id && !this.hasEdge(up, n.id) && !this.reaches(n.id, up)) this.connect(up, n.id);
      }
    },

    remember(e) {
      if (e.target.hasAttribute && e.target.hasAttribute("data-ref-target")) this.lastTarget = e.target.id;
    },

    // ---------------------------------------------------------------- edges

    hasEdge(a, b) { return this.edges.some(([x, y]) => x === a && y === b); },
    // is `to` reachable from `from` along the edges?
    reaches(from, to) {
      const seen = new Set([from]);
      const todo = [from];
      while (todo.length) {
        const n = todo.pop();
        if (n === to) return true;
        for (const [a, b] of this.edges) if (a === n && !seen.has(b)) { seen.add(b); todo.push(b); }
      }
      return false;
    },
    parents(id) { return this.edges.filter(([, b]) => b === id).map(([a]) => a); },
    // nodes `id` may depend on without a cycle
    candidates(id) { return this.order.filter((x) => x !== id && !this.reaches(id, x)); },
    ancestors(id) { return this.order.filter((x) => x !== id && this.reaches(x, id)); },
    // the nodes a node reads through references (each is a dependency whatever the canvas says)
    reads(id) {
      const n = this.nodes[id];
      return n ? new Set(this.texts(n).flatMap((t) => named(t, "nodes"))) : new Set();
    },

    connect(a, b) {
      quiet++;
      try { df.addConnection(this.nodes[a].df, this.nodes[b].df, "output_1", "input_1"); } finally { quiet--; }
      if (!this.hasEdge(a, b)) this.edges.push([a, b]);
    },
    disconnect(a, b) {
      quiet++;
      try { df.removeSingleConnection(this.nodes[a].df, this.nodes[b].df, "output_1", "input_1"); } finally { quiet--; }
      this.edges = this.edges.filter(([x, y]) => !(x === a && y === b));
    },

    connected(a, b) {
      if (quiet || !a || !b) return;
      if (this.reaches(b, a)) { // b already leads to a: this edge would close a cycle
        this.$nextTick(() => this.disconnect(a, b));
        My.toast(`${a} → ${b} would make a cycle: ${b} already runs before ${a}.`, "error");
        return;
      }
      if (!this.hasEdge(a, b)) this.edges.push([a, b]);
      this.dirty = true;
    },

    disconnected(a, b) {
      if (quiet || !a || !b) return;
      this.edges = this.edges.filter(([x, y]) => !(x === a && y === b));
      this.dirty = true;
      // a reference keeps the dependency, so the canvas keeps the edge (unless a node of it is being deleted)
      this.$nextTick(() => {
        if (this.nodes[a] && this.nodes[b] && this.reads(b).has(a) && !this.hasEdge(a, b)) {
          this.connect(a, b);
          My.toast(`${b} reads ${a}'s result, so it runs after ${a}: remove the reference first.`, "error");
        }
      });
    },

    setDeps(select) {
      const id = this.node.id;
      const want = new Set(Array.from(select.selectedOptions, (o) => o.value));
      const have = new Set(this.parents(id));
      const kept = [];
      for (const a of have) {
        if (want.has(a)) continue;
        if (this.reads(id).has(a)) kept.push(a);
        else this.disconnect(a, id);
      }
      for (const a of want) if (!have.has(a) && !this.reaches(id, a)) this.connect(a, id);
      if (kept.length) {
        My.toast(`${id} reads the result of ${kept.join(", ")}, so it keeps depending on it: remove the reference first.`, "error");
        for (const o of select.options) if (kept.includes(o.value)) o.selected = true;
      }
      this.dirty = true;
    },

    // ---------------------------------------------------------------- models, tasks, request fields

    modelOf(n) {
      return this.catalog.find((m) => m.id === n.model_id || (m.aliases || []).includes(n.model_id)) || null;
    },
    tasksOf(n) { const m = this.modelOf(n); return m ? m.tasks : []; },
    params(n) {
      const m = this.modelOf(n);
      const p = m && m.parameters ? m.parameters[n.task] : null;
      return Array.isArray(p) ? p : null;
    },
    hasForm(n) { return this.params(n) !== null; },
    isChat(n) { const p = this.params(n); return !!p && p.some((x) => x.name === "messages"); },
    formParams(n) {
      const p = this.params(n) || [];
      return p.filter((x) => !HIDDEN.includes(x.name) && x.name !== "messages")
        .sort((a, b) => Number(!!b.required) - Number(!!a.required));
    },
    control(p) {
      const t = typesOf(p);
      if (p.enum || (t.length === 1 && t[0] === "boolean")) return "select";
      if (t.includes("array") || t.includes("object") || LONG_TEXT.includes(p.name)) return "textarea";
      return "input";
    },
    choices(p) { return p.enum ? p.enum.map(String) : ["true", "false"]; },
    hint(p) {
      const bits = [typesOf(p).join(" or ")];
      if (p.minimum !== undefined || p.maximum !== undefined) bits.push(`${p.minimum ?? "…"}–${p.maximum ?? "…"}`);
      if (p.default !== undefined && p.default !== null) bits.push("default " + JSON.stringify(p.default));
      if (typesOf(p).some((t) => t === "array" || t === "object")) bits.push("JSON or one ${…} reference");
      return bits.join("; ");
    },

    modelChanged(value) {
      const n = this.node;
      n.model_id = value;
      const tasks = this.tasksOf(n);
      if (!tasks.includes(n.task)) this.taskChanged(tasks[0] || "");
    },
    taskChanged(value) {
      const n = this.node;
      const fromJson = n.jsonMode || !this.hasForm(n); // the JSON text holds the request now
      let before = null;
      if (!fromJson) { try { before = this.payload(n); } catch (_) { /* nothing to carry */ } }
      n.task = value;
      if (!this.hasForm(n)) { // no parameters known for this task: the request is JSON
        if (before) n.payloadText = JSON.stringify(before, null, 2);
        n.jsonMode = false;
      } else if (fromJson) {
        n.jsonMode = !this.fromPayloadText(n);
      } else if (before && !this.loadForm(n, before)) { // what was filled in does not fit the new task's form
        n.payloadText = JSON.stringify(before, null, 2);
        n.jsonMode = true;
      }
    },

    toggleJson(box) {
      const n = this.node;
      if (box.checked) {
        try { n.payloadText = JSON.stringify(this.payload(n), null, 2); } catch (_) { /* keep the text */ }
        n.jsonMode = true;
      } else if (!this.fromPayloadText(n)) {
        box.checked = true;
        My.toast("The form cannot show this request (fields it does not have, or messages beyond a system prompt and a prompt); it stays JSON.", "error");
      }
    },

    // the JSON text into the form; false when the form cannot hold it
    fromPayloadText(n) {
      let v;
      try { v = JSON.parse(n.payloadText || "{}"); } catch (_) { return false; }
      if (!this.loadForm(n, v)) return false;
      n.jsonMode = false;
      return true;
    },

    // a payload into the form's texts (n.prompt, n.system, n.fields); false when some value does not fit the form
    loadForm(n, payload) {
      const params = this.params(n);
      if (!params || !payload || typeof payload !== "object" || Array.isArray(payload)) return false;
      const fields = {};
      let prompt = "", system = "";
      for (const [k, v] of Object.entries(payload)) {
        if (k === "messages" && this.isChat(n)) {
          const simple = Array.isArray(v) && v.length >= 1 && v.length <= 2 && v.every((m) => m && typeof m === "object"
            && Object.keys(m).every((x) => x === "role" || x === "content") && typeof m.content === "string");
          if (!simple) return false;
          const roles = v.map((m) => m.role).join(",");
          if (roles === "user") prompt = v[0].content;
          else if (roles === "system,user") { system = v[0].content; prompt = v[1].content; }
          else return false;
          continue;
        }
        const p = params.find((x) => x.name === k);
        if (!p || HIDDEN.includes(k)) return false;
        const t = typesOf(p);
        if (p.enum && !p.enum.map(String).includes(String(v))) return false; // the select could not show it
        if (typeof v === "string") {
          // empty means "not given" in the form; a text it would read back as a number, JSON or true/false would not
          // round-trip either
          if (v === "" || typeof this.fromText(v, p) !== "string") return false;
          fields[k] = v;
        } else if (typeof v === "number") {
          if (!(t.includes("number") || (t.includes("integer") && Number.isInteger(v)))) return false;
          fields[k] = String(v);
        } else if (typeof v === "boolean") {
          if (!t.includes("boolean")) return false;
          fields[k] = String(v);
        } else if (v !== null && (t.includes("array") || t.includes("object"))) {
          fields[k] = JSON.stringify(v);
        } else {
          return false;
        }
      }
      n.fields = fields;
      n.prompt = prompt;
      n.system = system;
      return true;
    },

    // a field's text as the request's value
    fromText(text, p) {
      const t = typesOf(p);
      const s = text.trim();
      if ((t.includes("integer") || t.includes("number")) && /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(s)) return Number(s);
      if (t.includes("boolean") && (s === "true" || s === "false")) return s === "true";
      if ((t.includes("array") || t.includes("object")) && /^[[{]/.test(s)) {
        try { return JSON.parse(s); } catch (_) { /* the server names the field */ }
      }
      return text;
    },

    // the node's request (throws on JSON that does not parse)
    payload(n) {
      if (n.jsonMode || !this.hasForm(n)) {
        const v = JSON.parse(n.payloadText || "{}");
        if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("The request must be a JSON object.");
        return v;
      }
      const out = {};
      if (this.isChat(n)) {
        const msgs = [];
        if (n.system.trim()) msgs.push({ role: "system", content: n.system });
        if (n.prompt !== "") msgs.push({ role: "user", content: n.prompt });
        if (msgs.length) out.messages = msgs;
      }
      for (const p of this.formParams(n)) {
        const text = n.fields[p.name];
        if (text === undefined || text === "") continue;
        out[p.name] = this.fromText(text, p);
      }
      return out;
    },

    // every text of a node that may hold references
    texts(n) {
      const out = [n.items || ""];
      if (n.jsonMode || !this.hasForm(n)) out.push(n.payloadText || "");
      else out.push(n.prompt, n.system, ...Object.values(n.fields));
      return out;
    },

    // the references this node may use: the run's inputs, the results of the nodes upstream, ${item} in a map
    refs(n) {
      const out = this.inputNames().map((x) => "${input." + x + "}");
      if (n.kind === "map") out.push("${item}");
      for (const up of this.ancestors(n.id)) {
        const u = this.nodes[up];
        if (u.kind === "map") out.push(`\${nodes.${up}.result.items}`);
        else for (const p of RESULT_PATHS[u.task] || []) out.push(`\${nodes.${up}.result.${p}}`);
        out.push(`\${nodes.${up}.result}`);
      }
      return out;
    },

    insertRef() {
      const ref = document.getElementById("wf-ref").value;
      if (!ref) return;
      let el = this.lastTarget && document.getElementById(this.lastTarget);
      if (!el) el = document.getElementById("wf-prompt") || document.querySelector(".wf-props [data-ref-target]");
      if (!el) return;
      const start = el.selectionStart ?? el.value.length, end = el.selectionEnd ?? el.value.length;
      el.value = el.value.slice(0, start) + ref + el.value.slice(end);
      el.dispatchEvent(new Event("input", { bubbles: true })); // x-model reads it, touch() draws the dependency
      el.focus();
      el.setSelectionRange(start + ref.length, start + ref.length);
    },

    fieldErrors(key) {
      const n = this.node;
      if (!n) return [];
      const base = `dag.nodes.${n.id}.` + (n.kind === "map" && key !== "items" ? "node." : "");
      const match = (path) => {
        if (key === "model") return path === base + "model_id";
        if (key === "task") return path === base + "task";
        if (key === "items") return path === base + "items";
        const pay = [base + "payload", base + "inputs"];
        if (key === "json") return pay.some((b) => path === b || path.startsWith(b + ".") || path.startsWith(b + "["));
        if (key === "prompt") return pay.some((b) => path.startsWith(b + ".messages"));
        const name = key.slice(2);
        return pay.some((b) => path === `${b}.${name}` || path.startsWith(`${b}.${name}.`) || path.startsWith(`${b}.${name}[`));
      };
      return n.errors.filter((e) => e.path && match(e.path)).map((e) => e.message);
    },

    // ---------------------------------------------------------------- inputs of the agent

    usedInputs() {
      const out = new Set();
      for (const id of this.order) for (const t of this.texts(this.nodes[id])) named(t, "input").forEach((x) => out.add(x));
      return Array.from(out);
    },
    inputNames() {
      return Array.from(new Set(this.declaredInputs.concat(this.usedInputs()))).sort();
    },
    addInput() {
      const v = this.newInput.trim();
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(v)) { My.toast("An input name is letters, digits, '_' or '-'.", "error"); return; }
      if (!this.declaredInputs.includes(v)) this.declaredInputs.push(v);
      this.newInput = "";
      if (this.node) this.refChoice = "${input." + v + "}";
    },
    removeInput(name) { this.declaredInputs = this.declaredInputs.filter((x) => x !== name); },

    // ---------------------------------------------------------------- the document

    // our node state as the agent document's node
    nodeDoc(n) {
      const step = { model_id: n.model_id || undefined, task: n.task || undefined };
      step[n.payloadKey] = this.payload(n);
      const outs = n.outputs.split(",").map((s) => s.trim()).filter(Boolean);
      if (outs.length) step.outputs = outs;
      if (n.maxAttempts !== "" || n.backoff !== "") {
        step.retry = {};
        if (n.maxAttempts !== "") step.retry.max_attempts = inputValue(n.maxAttempts);
        if (n.backoff !== "") step.retry.backoff_seconds = inputValue(n.backoff);
      }
      if (n.timeout !== "") step.timeout_seconds = inputValue(n.timeout);
      if (n.kind === "task") {
        if (n.cache) step.cache = true;
        if (n.description) step.description = n.description;
        return step;
      }
      const doc = { type: "map", items: n.items, node: step };
      if (n.maxConcurrency !== "") doc.max_concurrency = inputValue(n.maxConcurrency);
      if (n.tolerance !== "") doc.tolerance = inputValue(n.tolerance);
      const mouts = n.mapOutputs.split(",").map((s) => s.trim()).filter(Boolean);
      if (mouts.length) doc.outputs = mouts;
      if (n.description) doc.description = n.description;
      return doc;
    },

    // the dag, or null when a node's JSON does not parse (that node then says so)
    dag() {
      const nodes = {};
      const layout = {};
      let bad = false;
      for (const id of this.order) {
        const n = this.nodes[id];
        try {
          nodes[id] = this.nodeDoc(n);
        } catch (e) {
          n.errors = [{ code: "invalid_json", message: "The request is not a JSON object: " + e.message,
            path: `dag.nodes.${id}.` + (n.kind === "map" ? "node." : "") + n.payloadKey }];
          this.render(id);
          bad = true;
        }
        const pos = df.drawflow.drawflow.Home.data[n.df];
        if (pos) layout[id] = { x: Math.round(pos.pos_x), y: Math.round(pos.pos_y) };
      }
      if (bad) {
        this.showProblems({}, "A node's request is not valid JSON; see the node.");
        return null;
      }
      // explicit edges: those a reference already implies need not be written
      const edges = this.edges.filter(([a, b]) => !this.reads(b).has(a)).map(([a, b]) => [a, b]);
      return { nodes, edges, layout };
    },

    clearProblems() {
      this.globalErrors = [];
      this.globalTitle = "";
      for (const id of this.order) { this.nodes[id].errors = []; this.render(id); }
    },

    // a 400's problems: each node's on the node, the graph's own (and any other) in the notice
    showProblems(body, title) {
      this.clearProblems();
      const errs = (body && body.node_errors) || {};
      const global = [];
      for (const [id, list] of Object.entries(errs)) {
        if (this.nodes[id]) this.nodes[id].errors = list;
        else global.push(...list.map((e) => (id === "_graph" ? "" : id + ": ") + e.message));
      }
      const marked = Object.keys(errs).filter((id) => this.nodes[id]);
      if (!Object.keys(errs).length && body && body.error) global.push(body.error.message);
      this.globalErrors = global;
      this.globalTitle = title || (marked.length
        ? `Problems in ${marked.length} node(s): ${marked.join(", ")} (shown on the nodes).`
        : "The workflow is not valid.");
      if (!global.length && marked.length) this.globalErrors = ["Select a node marked in red to see and fix its problems."];
      this.renderAll();
      if (marked.length && !marked.includes(this.selected)) this.select(marked[0], false);
    },

    async validate() {
      const dag = this.dag();
      if (!dag) return false;
      this.busy = true;
      this.okNotice = "";
      try {
        const r = await call("/api/agents/validate", "POST", { dag });
        if (!r.ok) { this.showProblems(r.data); return false; }
        this.clearProblems();
        const v = r.data;
        this.okNotice = `Valid. Runs ${v.order.join(" → ")}` + (v.inputs.length ? `; asks for ${v.inputs.join(", ")}.` : ".");
        return true;
      } catch (e) {
        My.toast(e.message, "error");
        return false;
      } finally {
        this.busy = false;
      }
    },

    async save() {
      if (!this.name.trim()) {
        My.toast("Give the workflow a name first.", "error");
        document.getElementById("wf-name").focus();
        return false;
      }
      const dag = this.dag();
      if (!dag) return false;
      this.busy = true;
      this.okNotice = "";
      try {
        const body = { name: this.name.trim(), description: this.description || null, dag };
        const r = this.agentId
          ? await call("/api/agents/" + encodeURIComponent(this.agentId), "PATCH", body)
          : await call("/api/agents", "POST", body);
        if (!r.ok) { this.showProblems(r.data, r.data && r.data.node_errors ? null : "Not saved."); return false; }
        this.clearProblems();
        const a = r.data.agent;
        const created = !this.agentId;
        this.agentId = a.id;
        this.version = a.version;
        this.savedName = a.name;
        this.dirty = false;
        if (created) history.replaceState(null, "", "/workflows/" + encodeURIComponent(a.id));
        document.title = a.name + " · Modelyard";
        this.okNotice = `Saved: version ${a.version}.`;
        return true;
      } catch (e) {
        My.toast(e.message, "error");
        return false;
      } finally {
        this.busy = false;
      }
    },

    async load() {
      let a;
      try {
        a = (await My.api("/api/agents/" + encodeURIComponent(this.agentId))).agent;
      } catch (e) {
        this.loadError = e.status === 404 ? `No workflow '${this.agentId}' in ${My.me.organization.name}.` : e.message;
        return;
      }
      this.name = a.name;
      this.savedName = a.name;
      this.description = a.description || "";
      this.version = a.version;
      document.title = a.name + " · Modelyard";
      const dag = a.dag || {};
      const raw = Array.isArray(dag.nodes)
        ? Object.fromEntries(dag.nodes.map((x) => [x.id, Object.fromEntries(Object.entries(x).filter(([k]) => k !== "id"))]))
        : dag.nodes || {};
      for (const [id, doc] of Object.entries(raw)) {
        this.nodes[id] = this.fromDoc(id, doc);
        this.order.push(id);
      }
      const explicit = (dag.edges || []).map((e) => (Array.isArray(e) ? e : [e.from, e.to]));
      const all = explicit.slice();
      for (const id of this.order) for (const up of this.reads(id)) if (this.nodes[up]) all.push([up, id]);
      const edges = [];
      for (const [x, y] of all) if (this.nodes[x] && this.nodes[y] && !edges.some(([p, q]) => p === x && q === y)) edges.push([x, y]);
      // positions: as saved (dag.layout), else by depth in the graph: a column per step from the first nodes
      const saved = dag.layout || {};
      const depth = {};
      const depthOf = (id, seen = new Set()) => {
        if (depth[id] !== undefined) return depth[id];
        if (seen.has(id)) return 0;
        seen.add(id);
        const ups = edges.filter(([, b]) => b === id).map(([x]) => x);
        depth[id] = ups.length ? 1 + Math.max(...ups.map((u) => depthOf(u, seen))) : 0;
        return depth[id];
      };
      const rows = {};
      for (const id of this.order) {
        const d = depthOf(id);
        const r = (rows[d] = (rows[d] || 0) + 1) - 1;
        const p = saved[id];
        const x = p && typeof p.x === "number" ? p.x : PAD + d * COL;
        const y = p && typeof p.y === "number" ? p.y : PAD + r * ROW;
        this.place(this.nodes[id], x, y);
      }
      for (const [x, y] of edges) this.connect(x, y);
      this.select(this.order[0] || null, false);
      this.dirty = false;
      this.$nextTick(() => this.fit());
      this.lastRun();
    },

    fromDoc(id, doc) {
      const kind = doc && doc.type === "map" ? "map" : "task";
      const n = blank(id, kind);
      const step = (kind === "map" ? doc.node : doc) || {};
      n.description = doc.description || "";
      n.model_id = step.model_id || "";
      n.task = step.task || "";
      n.payloadKey = "inputs" in step && !("payload" in step) ? "inputs" : "payload";
      const payload = step[n.payloadKey] || {};
      n.outputs = (step.outputs || []).join(", ");
      n.cache = !!step.cache;
      n.timeout = step.timeout_seconds !== undefined ? String(step.timeout_seconds) : "";
      if (step.retry) {
        n.maxAttempts = step.retry.max_attempts !== undefined ? String(step.retry.max_attempts) : "";
        n.backoff = step.retry.backoff_seconds !== undefined ? String(step.retry.backoff_seconds) : "";
      }
      if (kind === "map") {
        n.items = doc.items || "";
        n.maxConcurrency = doc.max_concurrency !== undefined ? String(doc.max_concurrency) : "";
        n.tolerance = doc.tolerance !== undefined ? String(doc.tolerance) : "";
        n.mapOutputs = (doc.outputs || []).join(", ");
      }
      n.payloadText = JSON.stringify(payload, null, 2);
      n.jsonMode = !this.loadForm(n, payload);
      return n;
    },

    // the agent's latest run, shown as on the canvas when it opens
    async lastRun() {
      try {
        const runs = await My.api("/api/runs?" + new URLSearchParams({ agent_id: this.agentId, limit: "1" }));
        if (runs.data.length && !this.run) this.watch(runs.data[0].id);
      } catch (_) { /* nothing to show */ }
    },

    // ---------------------------------------------------------------- runs

    async askRun() {
      if (!this.order.length) { My.toast("Add a node first.", "error"); return; }
      if (this.dirty || !this.agentId) {
        if (!(await this.save())) return;
      }
      this.runError = "";
      this.runInputs = this.inputNames();
      const old = this.runValues;
      this.runValues = Object.fromEntries(this.runInputs.map((x) => [x, old[x] || ""]));
      this.$refs.runDialog.showModal();
    },

    async startRun() {
      this.busy = true;
      this.runError = "";
      try {
        const input_params = Object.fromEntries(this.runInputs.map((x) => [x, inputValue(this.runValues[x])]));
        const r = await call(`/api/agents/${encodeURIComponent(this.agentId)}/run`, "POST", { input_params });
        if (!r.ok) {
          this.runError = (r.data && r.data.error && r.data.error.message) || `The server answered ${r.status}.`;
          if (r.data && r.data.node_errors) this.showProblems(r.data);
          return;
        }
        this.$refs.runDialog.close();
        this.clearProblems();
        this.watch(r.data.run.id);
      } catch (e) {
        this.runError = e.message;
      } finally {
        this.busy = false;
      }
    },

    // the run's states on the canvas, live from its event stream
    watch(runId) {
      if (stream) stream.close();
      this.run = { id: runId, status: "pending", error: null };
      for (const id of this.order) Object.assign(this.nodes[id], { state: "pending", output: null, runError: null, progress: null });
      this.renderAll();
      stream = new EventSource(`/api/runs/${encodeURIComponent(runId)}/events`);
      const on = (kind, fn) => stream.addEventListener(kind, (ev) => { fn(JSON.parse(ev.data)); this.renderAll(); });
      on("snapshot", (r) => {
        this.run = { id: r.id, status: r.status, error: r.error };
        for (const [id, v] of Object.entries(r.nodes || {})) {
          const n = this.nodes[id];
          if (!n) continue;
          n.state = v.state;
          n.output = v.result === undefined ? null : v.result;
          n.runError = v.error ? v.error.message || JSON.stringify(v.error) : null;
          n.progress = v.progress || null;
        }
        if (FINAL.includes(r.status)) this.closeStream();
      });
      on("run.started", () => { this.run.status = "running"; });
      const state = (s) => (d) => {
        const n = this.nodes[d.node];
        if (!n) return;
        n.state = s;
        if (d.output !== undefined) n.output = d.output;
        if (typeof d.total === "number") n.progress = { done: 0, failed: 0, total: d.total }; // a map started
        if (d.error) n.runError = d.error.message || JSON.stringify(d.error);
        else if (d.reason) n.runError = d.reason;
      };
      on("node.queued", state("queued"));
      on("node.started", state("running"));
      on("node.retrying", state("retrying"));
      on("node.succeeded", (d) => state(d.cached ? "cached" : "succeeded")(d));
      on("node.failed", state("failed"));
      on("node.skipped", state("skipped"));
      on("node.cancelled", state("cancelled"));
      on("map.progress", (d) => {
        const n = this.nodes[d.node];
        if (n) n.progress = { done: d.done, failed: d.failed, total: d.total };
      });
      on("run.completed", (d) => {
        this.run = { id: runId, status: d.status, error: d.error };
        this.closeStream();
      });
      stream.onerror = () => {
        if (stream && stream.readyState === EventSource.CLOSED) {
          My.toast("The run's event stream closed; open the run for its state.", "error");
          stream = null;
        } // otherwise the browser reconnects with Last-Event-ID
      };
    },
    closeStream() { if (stream) stream.close(); stream = null; },

    // the part of a node's output a person reads first (a chat's message, an image's link), if the task has one
    headline(n) {
      const path = (RESULT_PATHS[n.task] || [])[0];
      let v = n.output;
      if (!path || v === null || typeof v !== "object") return null;
      for (const step of path.replace(/\[(\d+)\]/g, ".$1").split(".")) v = v === null || v === undefined ? v : v[step];
      return typeof v === "string" ? v : null;
    },

    preview(v) {
      const s = typeof v === "string" ? v : JSON.stringify(v, null, 2);
      return s.length > 2000 ? s.slice(0, 2000) + "\n…" : s;
    },
  }));
});
