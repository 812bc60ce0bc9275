// WorkQueue dashboard: plain JavaScript, no dependency, every request to this origin only.
// Data is written with textContent (never innerHTML), so no job field can inject markup.
"use strict";

(function () {
  const KEY = "workqueue.apiKey";
  const REFRESH_MS = 1000; // a new refresh starts 1 s after the last one ended (within 2 s)
  const CHART_POINTS = 300; // 5 minutes at one point a second
  const STATUSES = ["queued", "active", "scheduled", "retrying", "completed", "failed", "cancelled"];
  const FINAL = new Set(["completed", "failed", "cancelled"]);

  const state = {
    key: sessionStorage.getItem(KEY) || "",
    view: "queues",
    arg: "",
    overview: null,
    samples: [], // {t, rate, waiting}
    last: null, // the previous overview's {t, finished}
    timer: null,
    flash: "",
    payloads: {}, // job id -> payload shown on request (cleared when the view changes)
  };

  // -- DOM helpers ---------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else if (name === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);
  const badge = (text) => el("span", { class: "badge " + text, text: text });

  function table(headers, rows, numeric) {
    const nums = new Set(numeric || []);
    return el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: nums.has(i) ? "num" : null, text: h })))),
      el("tbody", {}, rows.length ? rows.map((r) => el("tr", {}, r.map((c, i) =>
        el("td", { class: nums.has(i) ? "num" : null }, c)))) :
        el("tr", {}, el("td", { colspan: headers.length, class: "muted", text: "none" }))));
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }
  const when = (text) => (text ? text.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "-");

  // -- requests ------------------------------------------------------------------------------
  class Unauthorized extends Error {}
  class Missing extends Error {}

  async function api(path, method, okStatuses) {
    const headers = { Accept: "application/json" };
    if (state.key) headers.Authorization = "Bearer " + state.key;
    const init = { method: method || "GET", headers: headers, credentials: "omit", cache: "no-store" };
    if (method === "POST") {
      headers["Content-Type"] = "application/json";
      init.body = "{}";
    }
    const res = await fetch(path, init);
    if (res.status === 401) throw new Unauthorized();
    if (res.status === 404 || res.status === 405) {
      const body = await res.json().catch(() => ({}));
      throw new Missing(body.problem || "not available");
    }
    const body = await res.json().catch(() => null);
    if (!res.ok && !(okStatuses || []).includes(res.status)) {
      throw new Error((body && body.problem) || "HTTP " + res.status);
    }
    return body;
  }

  // -- log-in --------------------------------------------------------------------------------
  async function start() {
    let session;
    try {
      session = await api("/ui/api/session");
    } catch (err) {
      $("status").textContent = "producer unreachable";
      setTimeout(start, 2000);
      return;
    }
    if (session.key_required && !session.key_ok) {
      showLogin(state.key ? "wrong key" : "");
      return;
    }
    $("login").hidden = true;
    $("nav").hidden = false;
    $("view").hidden = false;
    $("logout").hidden = !session.key_required;
    route();
  }

  function showLogin(problem) {
    stop();
    state.key = "";
    sessionStorage.removeItem(KEY);
    $("nav").hidden = true;
    $("view").hidden = true;
    $("view").replaceChildren();
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = problem || "";
    $("status").textContent = "";
    $("key").focus();
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("key").value.trim();
    $("key").value = "";
    sessionStorage.setItem(KEY, state.key);
    start();
  });
  $("logout").addEventListener("click", () => showLogin(""));

  // -- routing and refresh -------------------------------------------------------------------
  function route() {
    const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "queues";
    const [view, ...rest] = hash.split("/");
    if (view !== state.view || rest.join("/") !== state.arg) {
      state.payloads = {};
      state.flash = "";
    }
    state.view = view;
    state.arg = rest.join("/");
    for (const a of document.querySelectorAll("nav a")) {
      a.classList.toggle("on", a.dataset.view === view || (view === "job" && a.dataset.view === "jobs"));
    }
    state.rendered = null;
    refresh();
  }
  window.addEventListener("hashchange", () => {
    if (!$("view").hidden) route();
  });

  function stop() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  async function refresh() {
    stop();
    const view = state.view;
    try {
      await poll(view);
      $("status").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      if (err instanceof Unauthorized) {
        showLogin("the key was refused");
        return;
      }
      $("status").textContent = "refresh failed: " + err.message;
    }
    // a hidden tab stops polling (no cost on Redis); it refreshes at once when shown again
    if (!$("view").hidden && !document.hidden) state.timer = setTimeout(refresh, REFRESH_MS);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !$("view").hidden && !state.timer) refresh();
  });

  async function poll(view) {
    const overview = await api("/ui/api/overview");
    sample(overview);
    state.overview = overview;
    const render = VIEWS[view] || VIEWS.queues;
    const content = await render(state.arg);
    if (view !== state.view) return; // navigated meanwhile: the next refresh draws it
    const focused = document.activeElement;
    if (focused && focused.dataset && focused.dataset.keep && $("view").contains(focused)) {
      return; // the operator is typing in a field of this view: keep it as it is
    }
    const flash = el("div", { id: "flash", class: state.flashError ? "error" : "muted", text: state.flash });
    $("view").replaceChildren(flash, content);
  }

  function sample(o) {
    const finished = o.queues.reduce((n, q) => n + q.done + q.failed + q.cancelled, 0);
    const waiting = o.queues.reduce((n, q) => n + q.depth.queued, 0);
    let rate = null;
    if (state.last && o.now_ms > state.last.t) {
      rate = Math.max(0, ((finished - state.last.finished) * 1000) / (o.now_ms - state.last.t));
    }
    state.last = { t: o.now_ms, finished: finished };
    if (rate !== null) state.samples.push({ t: o.now_ms, rate: rate, waiting: waiting });
    const cutoff = o.now_ms - CHART_POINTS * 1000;
    while (state.samples.length && state.samples[0].t < cutoff) state.samples.shift();
    state.rate = rate;
  }

  async function act(label, path, okStatuses) {
    try {
      await api(path, "POST", okStatuses);
      state.flash = label;
      state.flashError = false;
    } catch (err) {
      if (err instanceof Unauthorized) return showLogin("the key was refused");
      state.flash = label + " failed: " + err.message;
      state.flashError = true;
    }
    refresh();
  }

  const retryButton = (id) => el("button", { type: "button", "data-action": "retry", "data-id": id,
    on: { click: () => act("retried " + id, "/jobs/" + encodeURIComponent(id) + "/retry") } }, "Retry");
  const cancelButton = (id) => el("button", { type: "button", class: "danger", "data-action": "cancel", "data-id": id,
    on: { click: () => act("asked to cancel " + id, "/jobs/" + encodeURIComponent(id) + "/cancel", [202]) } }, "Cancel");
  const jobLink = (id) => el("a", { href: "#job/" + encodeURIComponent(id), class: "job-link", text: id });

  // -- views ---------------------------------------------------------------------------------
  function chart() {
    const w = 640, h = 140, pad = 28;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const s = state.samples;
    const add = (tag, attrs, text) => {
      const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      svg.append(n);
    };
    add("line", { x1: pad, y1: h - pad, x2: w - 4, y2: h - pad });
    const maxRate = Math.max(1, ...s.map((p) => p.rate));
    const maxWait = Math.max(1, ...s.map((p) => p.waiting));
    const t1 = s.length ? s[s.length - 1].t : 0;
    // the span shown: the samples kept (up to 5 minutes), at least 30 s
    const span = Math.max(30000, s.length ? t1 - s[0].t : 0);
    const x = (t) => w - 4 - ((t1 - t) / span) * (w - pad - 4);
    const line = (cls, y) => {
      if (s.length > 1) add("polyline", { class: cls, points: s.map((p) => x(p.t).toFixed(1) + "," + y(p).toFixed(1)).join(" ") });
    };
    line("rate", (p) => h - pad - (p.rate / maxRate) * (h - pad - 10));
    line("wait", (p) => h - pad - (p.waiting / maxWait) * (h - pad - 10));
    add("text", { x: 4, y: 14 }, maxRate.toFixed(1) + "/s");
    add("text", { x: pad, y: h - 8 }, span >= 120000 ? "-" + Math.round(span / 60000) + " min" : "-" + Math.round(span / 1000) + " s");
    add("text", { x: w - 40, y: h - 8 }, "now");
    return el("div", {}, svg, el("div", { class: "legend" },
      el("span", { class: "rate", text: "— finished jobs/s (max " + maxRate.toFixed(1) + ")" }),
      el("span", { class: "wait", text: "- - waiting (max " + maxWait + ")" })));
  }

  const VIEWS = {
    async queues() {
      const o = state.overview;
      const rows = o.queues.map((q) => [
        el("span", { class: "queue-name", text: q.name }),
        q.paused === null ? el("span", { class: "muted", text: "n/a" }) : q.paused ? badge("paused") : "running",
        ...STATUSES.map((s) => String(q.depth[s] ?? 0)),
        age(q.oldest_waiting_seconds),
        String(q.done), String(q.failed),
        q.paused === null ? "" : q.paused
          ? el("button", { type: "button", "data-action": "resume", "data-queue": q.name,
            on: { click: () => act("resumed " + q.name, "/queues/" + encodeURIComponent(q.name) + "/resume") } }, "Resume")
          : el("button", { type: "button", "data-action": "pause", "data-queue": q.name,
            on: { click: () => act("paused " + q.name, "/queues/" + encodeURIComponent(q.name) + "/pause") } }, "Pause"),
      ]);
      const rate = state.rate === null || state.rate === undefined ? "-" : state.rate.toFixed(2) + " jobs/s";
      return el("div", { id: "queues-view" },
        el("h2", { text: "Queues" }),
        el("p", { class: "muted" }, `${o.queues.length} queues, ${o.workers} live workers, throughput ${rate}`,
          o.pause_supported ? "" : " (pause/resume: not available on this producer)"),
        chart(),
        table(["queue", "state", ...STATUSES, "oldest waiting", "done (total)", "failed (total)", ""], rows,
          [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
    },

    async jobs(arg) {
      const [status, queue] = (arg || "queued").split("/");
      const params = new URLSearchParams({ status: status, limit: "50" });
      if (queue) params.set("queue", queue);
      const jobs = await api("/ui/api/jobs?" + params);
      const form = el("form", { class: "bar", id: "lookup" },
        el("label", {}, "status ", el("select", { id: "status-select", on: { change: (ev) => {
          location.hash = "#jobs/" + ev.target.value + (queue ? "/" + queue : "");
        } } }, STATUSES.map((s) => el("option", { value: s, selected: s === status ? "selected" : null, text: s })))),
        el("input", { id: "job-id", "data-keep": "1", placeholder: "job id", autocomplete: "off" }),
        el("button", { type: "submit" }, "Look up"));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const id = $("job-id").value.trim();
        if (id) location.hash = "#job/" + encodeURIComponent(id);
      });
      return el("div", { id: "jobs-view" }, el("h2", { text: "Jobs: " + status + (queue ? " in " + queue : "") }), form,
        jobTable(jobs));
    },

    async failed() {
      const jobs = await api("/ui/api/jobs?status=failed&limit=100");
      return el("div", { id: "failed-view" }, el("h2", { text: "Failed jobs" }), jobTable(jobs));
    },

    async job(id) {
      let job;
      try {
        job = await api("/jobs/" + encodeURIComponent(id));
      } catch (err) {
        if (err instanceof Missing) return el("div", { id: "job-view" }, el("h2", { text: "Job " + id }), el("p", { class: "error", text: "no such job" }));
        throw err;
      }
      const actions = el("p", {},
        job.status === "failed" ? retryButton(job.id) : null, " ",
        FINAL.has(job.status) ? null : cancelButton(job.id));
      const payload = state.payloads[job.id];
      const payloadPart = payload === undefined
        ? el("button", { type: "button", id: "show-payload", on: { click: async () => {
          try {
            state.payloads[job.id] = (await api("/ui/api/jobs/" + encodeURIComponent(job.id) + "/payload")).payload;
          } catch (err) {
            state.flash = "payload: " + err.message;
            state.flashError = true;
          }
          refresh();
        } } }, "Show payload")
        : el("pre", { id: "payload" }, JSON.stringify(payload, null, 2));
      const history = table(["attempt", "worker", "started", "finished", "outcome", "error"],
        (job.history || []).map((a) => [String(a.attempt), a.worker || "-", when(a.started_at), when(a.finished_at),
          badge(a.outcome), a.error || ""]), [0]);
      return el("div", { id: "job-view" },
        el("h2", {}, "Job ", el("code", { text: job.id }), " ", badge(job.status)),
        actions,
        el("dl", {}, [
          ["type", job.type], ["queue", job.queue], ["attempts", `${job.attempts} of ${job.retries + 1}`],
          ["enqueued", when(job.enqueued_at)], ["started", when(job.started_at)], ["finished", when(job.finished_at)],
          ["lost leases", String(job.lost_leases ?? 0)],
        ].map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
        el("h3", { text: "Progress" }), el("pre", { id: "progress" }, job.progress === null ? "-" : JSON.stringify(job.progress)),
        el("h3", { text: "Result" }), el("pre", { id: "result" }, job.result === null ? "-" : JSON.stringify(job.result, null, 2)),
        el("h3", { text: "Error" }), el("pre", { id: "error", class: job.error ? "error" : null }, job.error || "-"),
        el("h3", { text: "Attempts" }), history,
        el("h3", { text: "Payload" }), payloadPart);
    },

    async workers() {
      const data = await api("/ui/api/workers");
      const rows = data.workers.map((w) => [
        el("span", { class: "worker-id", text: w.id }), w.host, String(w.pid), w.queues.join(", "),
        String(w.concurrency),
        el("span", {}, w.running.length ? w.running.map((id, i) => [i ? ", " : "", jobLink(id)]) : "-"),
        age(Math.max(0, (data.now_ms - w.last_heartbeat_ms) / 1000)) + " ago",
      ]);
      return el("div", { id: "workers-view" }, el("h2", { text: "Workers" }),
        table(["id", "host", "pid", "queues", "concurrency", "running jobs", "last heartbeat"], rows, [2, 4]));
    },

    async schedules() {
      let data;
      try {
        data = await api("/schedules");
      } catch (err) {
        if (err instanceof Missing) return el("div", { id: "schedules-view" }, el("h2", { text: "Schedules" }), el("p", { class: "muted", text: "not available on this producer" }));
        throw err;
      }
      const list = Array.isArray(data) ? data : data.schedules || [];
      // the payload of a schedule is not shown (payload values only on request, per job)
      const rows = list.map((s) => [s.name, s.cron, s.type, s.queue, s.timezone || "UTC", s.source || "-",
        s.paused ? badge("paused") : "active", when(s.next_tick), when(s.last_tick),
        s.last_job_id ? jobLink(s.last_job_id) : "-", String(s.fired ?? 0)]);
      return el("div", { id: "schedules-view" }, el("h2", { text: "Schedules" }),
        table(["name", "cron", "type", "queue", "timezone", "source", "state", "next tick", "last tick", "last job", "fired"],
          rows, [10]));
    },

    async limits() {
      let data;
      try {
        data = await api("/limits");
      } catch (err) {
        if (err instanceof Missing) return el("div", { id: "limits-view" }, el("h2", { text: "Limits" }), el("p", { class: "muted", text: "not available on this producer" }));
        throw err;
      }
      const text = (d) => (d ? Object.entries(d).map(([k, v]) => k + " " + (v === null ? "none" : v)).join(", ") : "-");
      const rows = data.map((l) => [l.type, text(l.effective), text(l.declared), text(l.runtime), String(l.held), String(l.waiting)]);
      return el("div", { id: "limits-view" }, el("h2", { text: "Limits" }),
        table(["type", "in effect", "declared", "run-time", "held", "waiting"], rows, [4, 5]));
    },
  };

  function jobTable(jobs) {
    return table(["id", "type", "queue", "status", "attempts", "enqueued", "finished", "error", ""],
      jobs.map((j) => [jobLink(j.id), j.type, j.queue, badge(j.status), String(j.attempts), when(j.enqueued_at),
        when(j.finished_at), (j.error || "").slice(0, 80),
        el("span", {}, j.status === "failed" ? retryButton(j.id) : null, " ", FINAL.has(j.status) ? null : cancelButton(j.id))]),
      [4]);
  }

  start();
})();
