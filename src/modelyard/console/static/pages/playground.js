"use strict";
// /playground: try a model through the same /v1 API a program calls (the session cookie authenticates; state changes
// carry the CSRF header). Chat streams with fetch + a ReadableStream read as SSE; image, speech, transcription and
// embeddings are one call each. Every mode shows the curl and openai-SDK code for exactly what its form holds.
document.addEventListener("alpine:init", () => {
  // mode -> the task its models must serve
  const TASKS = { chat: "chat", image: "text-to-image", speech: "speech", transcription: "transcription",
                  embeddings: "embedding" };
  const MODES = Object.keys(TASKS);
  const FORMATS = ["mp3", "wav", "opus", "aac", "flac", "pcm"];
  const MIME = { mp3: "audio/mpeg", wav: "audio/wav", opus: "audio/ogg", aac: "audio/aac", flac: "audio/flac",
                 pcm: "audio/L16" };
  const KEY = "$MODELYARD_API_KEY";

  // ---------------------------------------------------------------- code: a shell word, a Python literal
  const SAFE = /^[A-Za-z0-9_.\/:@=+,-]+$/;
  const sh = (s) => (SAFE.test(s) ? s : "'" + String(s).replace(/'/g, "'\\''") + "'");
  function py(v, indent = "") {
    if (v === null || v === undefined) return "None";
    if (v === true) return "True";
    if (v === false) return "False";
    if (typeof v === "number") return String(v);
    if (typeof v === "string") return JSON.stringify(v); // JSON's escapes are Python's too
    if (Array.isArray(v)) {
      if (!v.length) return "[]";
      const inner = indent + "    ";
      return "[\n" + v.map((x) => inner + py(x, inner) + ",").join("\n") + "\n" + indent + "]";
    }
    return "{" + Object.entries(v).map(([k, x]) => JSON.stringify(k) + ": " + py(x, indent)).join(", ") + "}";
  }
  const kwargs = (obj, indent) => Object.entries(obj).map(([k, v]) => `${indent}${k}=${py(v, indent)},`).join("\n");
  const number = (v) => (v === "" || v === null || v === undefined || Number.isNaN(Number(v)) ? null : Number(v));

  // the SSE events of a fetch Response's body, as parsed JSON (null for [DONE])
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let m;
      while ((m = /\r?\n\r?\n/.exec(buf))) {
        const block = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data === "[DONE]") { yield null; return; }
        yield JSON.parse(data);
      }
    }
  }

  Alpine.data("playgroundPage", () => {
    // not reactive: browser objects whose methods refuse a Proxy as `this`
    let controller = null;
    let file = null;
    let audioUrl = null;

    return {
      MODES, FORMATS,
      LABELS: { chat: "Chat", image: "Image", speech: "Speech", transcription: "Transcription", embeddings: "Embeddings" },
      catalog: [], loaded: false, loadError: "", voices: {},
      mode: "chat", lang: "curl", asked: null,
      model: { chat: "", image: "", speech: "", transcription: "", embeddings: "" },
      error: { chat: "", image: "", speech: "", transcription: "", embeddings: "" },
      usage: { chat: null, image: null, speech: null, transcription: null, embeddings: null },
      busy: false,
      chat: { system: "", input: "", history: [], temperature: "", max_tokens: "", top_p: "" },
      image: { prompt: "", n: 1, size: "", images: [] },
      speech: { input: "", voice: "", format: "mp3", src: "", type: "", bytes: 0, playable: null },
      tx: { fileName: "", language: "", text: "" },
      emb: { input: "", result: null },

      async init() {
        const q = My.query();
        if (MODES.includes(q.mode)) this.mode = q.mode;
        this.asked = q.model || null;
        try {
          this.catalog = (await My.api("/api/catalog")).data;
        } catch (e) {
          this.loadError = "Could not read the catalog: " + e.message;
        }
        if (this.asked && !q.mode) { // a model named without a mode: the first mode it serves
          const m = this.find(this.asked);
          const mode = m && MODES.find((k) => m.tasks.includes(TASKS[k]));
          if (mode) this.mode = mode;
        }
        for (const k of MODES) {
          const list = this.modelsFor(k);
          const wanted = k === this.mode && this.asked ? this.find(this.asked) : null;
          this.model[k] = wanted && list.includes(wanted) ? wanted.id : (list[0] ? list[0].id : "");
        }
        this.loaded = true;
        if (this.models.length) this.sync();
        this.$watch("mode", () => this.sync());
        try { // voices of the speech models, for the voice picker
          for (const v of (await My.api("/api/voice/models")).models) this.voices[v.model_id] = v;
        } catch (_) { /* a free-text voice then */ }
        this.pickVoice();
      },

      async restatus() { // a call may have woken its model: the picker shows states as they are now
        try { this.catalog = (await My.api("/api/catalog")).data; } catch (_) { /* keep the last known */ }
      },
      find(name) { return this.catalog.find((m) => m.id === name || m.aliases.includes(name)) || null; },
      modelsFor(mode) { return this.catalog.filter((m) => m.tasks.includes(TASKS[mode])); },
      get models() { return this.modelsFor(this.mode); },
      get current() { return this.find(this.model[this.mode]); },
      get notOffered() { // ?model= named a model this mode cannot use
        if (!this.loaded || !this.asked) return "";
        const m = this.find(this.asked);
        if (m && m.tasks.includes(TASKS[this.mode])) return "";
        return m ? `${m.id} does not serve ${TASKS[this.mode]}.` : `No model '${this.asked}' in your catalog.`;
      },
      sync() { My.setQuery({ mode: this.mode, model: this.model[this.mode] }); },
      chose() { this.asked = null; this.sync(); if (this.mode === "speech") this.pickVoice(); },
      modelHref(id) { return "/models/" + id.split("/").map(encodeURIComponent).join("/"); },
      bound(name, key) { // a chat parameter's bound from the model's catalog schema
        const m = this.current;
        const p = m && m.parameters.chat ? m.parameters.chat.find((x) => x.name === name) : null;
        return p && p[key] !== undefined ? p[key] : null;
      },

      // ---------------------------------------------------------------- what each mode sends
      chatMessages(pending = true) {
        const out = [];
        if (this.chat.system.trim()) out.push({ role: "system", content: this.chat.system });
        for (const m of this.chat.history) if (m.content) out.push({ role: m.role, content: m.content });
        if (pending && this.chat.input.trim()) out.push({ role: "user", content: this.chat.input });
        return out;
      },
      chatBody(pending = true) {
        const body = { model: this.model.chat, messages: this.chatMessages(pending) };
        for (const k of ["temperature", "max_tokens", "top_p"]) {
          const v = number(this.chat[k]);
          if (v !== null) body[k] = v;
        }
        return Object.assign(body, { stream: true, stream_options: { include_usage: true } });
      },
      imageBody() {
        const body = { model: this.model.image, prompt: this.image.prompt, n: number(this.image.n) || 1 };
        if (this.image.size) body.size = this.image.size;
        return body;
      },
      speechBody() {
        return { model: this.model.speech, input: this.speech.input, voice: this.speech.voice || "alloy",
                 response_format: this.speech.format };
      },
      txFields() {
        const f = { model: this.model.transcription };
        if (this.tx.language.trim()) f.language = this.tx.language.trim();
        return f;
      },
      embBody() { return { model: this.model.embeddings, input: this.emb.input }; },

      // ---------------------------------------------------------------- the code beside the form
      get base() { return location.origin + "/v1"; },
      get curl() {
        const auth = `  -H "Authorization: Bearer ${KEY}"`;
        const json = (path, body, extra = "") => [`curl ${this.base}${path}`, auth, `  -H "Content-Type: application/json"`,
          `  -d ${sh(JSON.stringify(body, null, 2))}` + extra].join(" \\\n");
        switch (this.mode) {
          case "chat": return json("/chat/completions", this.chatBody()).replace(/^curl /, "curl -N ");
          case "image": return json("/images/generations", this.imageBody());
          case "speech": return json("/audio/speech", this.speechBody(), ` \\\n  --output speech.${this.speech.format}`);
          case "transcription": {
            const f = this.txFields();
            const lines = [`curl ${this.base}/audio/transcriptions`, auth, `  -F model=${sh(f.model)}`,
              `  -F file=@${sh(this.tx.fileName || "audio.wav")}`];
            if (f.language) lines.push(`  -F language=${sh(f.language)}`);
            return lines.join(" \\\n");
          }
          default: return json("/embeddings", this.embBody());
        }
      },
      get python() {
        const head = `import os\n\nfrom openai import OpenAI\n\nclient = OpenAI(\n    base_url=${py(this.base)},\n` +
          `    api_key=os.environ["MODELYARD_API_KEY"],\n)\n\n`;
        switch (this.mode) {
          case "chat": return head + `stream = client.chat.completions.create(\n${kwargs(this.chatBody(), "    ")}\n)\n` +
            `for chunk in stream:\n    if chunk.choices and chunk.choices[0].delta.content:\n` +
            `        print(chunk.choices[0].delta.content, end="", flush=True)\n    if chunk.usage:\n` +
            `        print("\\n", chunk.usage)\n`;
          case "image": return head + `result = client.images.generate(\n${kwargs(this.imageBody(), "    ")}\n)\n` +
            `for image in result.data:\n    print(image.url or image.b64_json[:40])\n`;
          case "speech": return head + `with client.audio.speech.with_streaming_response.create(\n` +
            `${kwargs(this.speechBody(), "    ")}\n) as response:\n    response.stream_to_file("speech.${this.speech.format}")\n`;
          case "transcription": return head + `with open(${py(this.tx.fileName || "audio.wav")}, "rb") as audio:\n` +
            `    transcript = client.audio.transcriptions.create(\n${kwargs(this.txFields(), "        ")}\n        file=audio,\n    )\n` +
            `print(transcript.text)\n`;
          default: return head + `result = client.embeddings.create(\n${kwargs(this.embBody(), "    ")}\n)\n` +
            `vector = result.data[0].embedding\nprint(len(vector), vector[:8])\n`;
        }
      },
      get snippet() { return this.lang === "curl" ? this.curl : this.python; },
      copy() { My.copy(this.snippet, this.lang === "curl" ? "The curl command was copied" : "The Python code was copied"); },

      // ---------------------------------------------------------------- calls
      begin() { this.error[this.mode] = ""; this.busy = true; return performance.now(); },
      done(mode, r, started, extra) {
        this.restatus();
        this.usage[mode] = Object.assign({ request_id: r ? r.headers.get("x-request-id") : null,
                                           deployment: r ? r.headers.get("x-modelyard-deployment") : null,
                                           total_ms: performance.now() - started }, extra || {});
      },
      fail(mode, e) { this.error[mode] = e.message || String(e); },

      async sendChat() {
        const text = this.chat.input;
        if (!text.trim() || this.busy || !this.model.chat) return;
        const body = this.chatBody();
        this.chat.history.push({ role: "user", content: text });
        this.chat.history.push({ role: "assistant", content: "", stopped: false, failed: "" });
        const reply = this.chat.history[this.chat.history.length - 1]; // the reactive one
        this.chat.input = "";
        const started = this.begin();
        controller = new AbortController();
        let response = null, first = null, usage = null;
        try {
          response = await My.api("/v1/chat/completions", { body, raw: true, signal: controller.signal });
          for await (const ev of events(response)) {
            if (ev === null) break;
            if (ev.error) throw new Error(ev.error.message || "The stream ended with an error.");
            if (ev.usage) usage = ev.usage;
            for (const c of ev.choices || []) {
              const piece = c.index === 0 && c.delta ? c.delta.content : null;
              if (piece) {
                if (first === null) first = performance.now();
                reply.content += piece;
              }
            }
          }
        } catch (e) {
          if (e.name === "AbortError") {
            reply.stopped = true;
          } else if (!reply.content) { // nothing came: take the turn back so it can be sent again
            this.chat.history.splice(-2, 2);
            this.chat.input = text;
            this.fail("chat", e);
          } else {
            reply.failed = e.message;
            this.fail("chat", e);
          }
        } finally {
          controller = null;
          this.busy = false;
          if (response) {
            this.done("chat", response, started, { ttft_ms: first === null ? null : first - started, tokens: usage,
                                                   stopped: reply.stopped });
          }
          if (!reply.content && reply.stopped) this.chat.history.splice(-1, 1);
          this.$nextTick(() => { const el = this.$refs.conversation; if (el) el.scrollTop = el.scrollHeight; });
        }
      },
      stop() { if (controller) controller.abort(); },
      newChat() { this.stop(); this.chat.history = []; this.usage.chat = null; this.error.chat = ""; },
      chatKey(e) { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.sendChat(); } },

      async generate() {
        if (this.busy || !this.image.prompt.trim()) return;
        const started = this.begin();
        this.image.images = [];
        try {
          const r = await My.api("/v1/images/generations", { body: this.imageBody(), raw: true });
          const got = await r.json();
          this.image.images = got.data.map((d, i) => ({ key: i, src: d.url || "data:image/png;base64," + d.b64_json,
                                                        caption: d.revised_prompt || "" }));
          this.done("image", r, started, { images: got.data.length });
        } catch (e) { this.fail("image", e); } finally { this.busy = false; }
      },

      async speak() {
        if (this.busy || !this.speech.input.trim()) return;
        const started = this.begin();
        try {
          const r = await My.api("/v1/audio/speech", { body: this.speechBody(), raw: true });
          const blob = await r.blob();
          if (audioUrl) URL.revokeObjectURL(audioUrl);
          const type = blob.type || MIME[this.speech.format] || "audio/mpeg";
          audioUrl = URL.createObjectURL(blob.type ? blob : new Blob([blob], { type }));
          Object.assign(this.speech, { src: audioUrl, type, bytes: blob.size, playable: null });
          this.done("speech", r, started, { bytes: blob.size, characters: this.speech.input.length });
        } catch (e) { this.fail("speech", e); } finally { this.busy = false; }
      },
      audioLoaded(e) {
        this.speech.playable = true;
        if (this.usage.speech) this.usage.speech.seconds = e.target.duration;
      },
      audioFailed() { if (this.speech.src) this.speech.playable = false; },
      pickVoice() {
        const v = this.voices[this.model.speech];
        // a model without a voice list takes OpenAI's names (engines that have their own read them as their default)
        if (!v || !v.voices.length) { this.speech.voice = "alloy"; return; }
        if (!v.voices.includes(this.speech.voice)) this.speech.voice = v.default_voice || v.voices[0];
      },
      get voiceList() { const v = this.voices[this.model.speech]; return v ? v.voices : []; },

      pickFile(e) {
        file = e.target.files && e.target.files[0] ? e.target.files[0] : null;
        this.tx.fileName = file ? file.name : "";
      },
      async transcribe() {
        if (this.busy || !file) return;
        const started = this.begin();
        this.tx.text = "";
        try {
          const form = new FormData();
          for (const [k, v] of Object.entries(this.txFields())) form.append(k, v);
          form.append("file", file, file.name);
          const r = await My.api("/v1/audio/transcriptions", { form, raw: true });
          const got = await r.json();
          this.tx.text = got.text;
          this.done("transcription", r, started, { bytes: file.size, tokens: got.usage || null });
        } catch (e) { this.fail("transcription", e); } finally { this.busy = false; }
      },

      async embed() {
        if (this.busy || !this.emb.input.trim()) return;
        const started = this.begin();
        this.emb.result = null;
        try {
          const r = await My.api("/v1/embeddings", { body: this.embBody(), raw: true });
          const got = await r.json();
          const v = got.data[0].embedding;
          this.emb.result = { dimensions: v.length, first: v.slice(0, 8) };
          this.done("embeddings", r, started, { tokens: got.usage || null });
        } catch (e) { this.fail("embeddings", e); } finally { this.busy = false; }
      },

      // ---------------------------------------------------------------- what the usage line says
      get use() { return this.usage[this.mode]; },
      tokens(u) {
        const t = u && u.tokens;
        if (!t) return null;
        const parts = [];
        if (t.prompt_tokens !== undefined) parts.push(`${My.num(t.prompt_tokens)} in`);
        if (t.completion_tokens !== undefined) parts.push(`${My.num(t.completion_tokens)} out`);
        if (t.total_tokens !== undefined) parts.push(`${My.num(t.total_tokens)} total`);
        return parts.join(" · ");
      },
      fmtVec(v) { return "[" + v.map((x) => Number(x).toFixed(4)).join(", ") + (this.emb.result.dimensions > v.length ? ", …]" : "]"); },
      logHref(id) { return My.can("admin:read") && id ? "/logs/" + encodeURIComponent(id) : null; },
      ms(v) { return My.ms(v); },
      bytes(n) { return My.bytes(n); },
    };
  });
});
