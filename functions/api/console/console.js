// Sundial console: a dependency-free single page over the Sundial HTTP API (SPEC §10).
// Views are rebuilt from the URL hash; every value from the API enters the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "sundial.token";
const PKCE_KEY = "sundial.pkce";
const RECENT_KEY = "sundial.recentProjects";
const PAGE_SIZE = 20;
const SEARCH_LIMIT = 1000;
const POLL_MS = 2000;
const RUN_GUARD_MS = 3000;

const state = { config: null, token: null, claims: null, timers: [], view: 0 };

// ---------------------------------------------------------------- DOM helpers
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "value") node.value = value;
    else if (name === "checked") node.checked = Boolean(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector, root = document) => root.querySelector(selector);
const enc = encodeURIComponent;

function show(...nodes) {
  const main = $("#main");
  main.replaceChildren(...nodes);
}

function toast(message) {
  const box = $("#toast");
  box.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.textContent = ""; }, 4000);
}

function alertBox(message, kind = "") {
  return h("div", { class: `alert ${kind}`, role: "alert" }, message);
}

function when(iso) {
  if (!iso) return "—";
  return iso.replace("T", " ").replace(/(\.\d+)?Z$/, " UTC");
}

function badge(status) {
  return status ? h("span", { class: `badge ${status}` }, status) : "—";
}

function crumbs(...items) {
  $("#crumbs").replaceChildren(...items.map(([text, href]) => (href ? h("a", { href }, text) : h("span", {}, text))));
}

// Timers (polling) belong to one view; a new view stops the old view's.
function every(ms, fn) {
  state.timers.push(setInterval(fn, ms));
}
function stopTimers() {
  state.timers.forEach(clearInterval);
  state.timers = [];
}

// ---------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Authorization: `Bearer ${state.token}`, ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (failure) {
    throw new ApiError(0, { code: "network", message: `The API could not be reached: ${failure.message}` });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (response.status === 401) {
    signOut("The API refused the token (it may have expired). Sign in again.");
    throw new ApiError(401, { code: "unauthorized", message: "Sign in again" });
  }
  if (!response.ok) {
    const error = (data && data.error) || { message: (data && data.message) || response.statusText };
    throw new ApiError(response.status, error);
  }
  return data;
}

function describeError(error) {
  if (error.status === 403) return `Not allowed: ${error.message}`;
  return error.message;
}

const tenant = () => state.claims[state.config.tenantClaim];
const projectBase = (project) => `/tenants/${enc(tenant())}/projects/${enc(project)}`;
const agentBase = (project, agent) => `${projectBase(project)}/agents/${enc(agent)}/scheduled-triggers`;
const triggerUrl = (project, agent, id) => `${agentBase(project, agent)}/${enc(id)}`;
const triggerHref = (t) => `#/projects/${enc(t.projectId)}/agents/${enc(t.agentId)}/triggers/${enc(t.id)}`;
const invocationHref = (project, agent, trigger, id) =>
  `#/projects/${enc(project)}/agents/${enc(agent)}/triggers/${enc(trigger)}/invocations/${enc(id)}`;

// ---------------------------------------------------------------- sign-in
function decodeClaims(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("This is not a JWT (it needs three dot-separated parts).");
  const text = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
  return JSON.parse(decodeURIComponent(escape(text)));
}

function rolesOf(claims) {
  const roles = claims[state.config.rolesClaim];
  if (Array.isArray(roles)) return roles.map(String);
  return typeof roles === "string" ? roles.split(/[\s,]+/).filter(Boolean) : [];
}

function useToken(token) {
  const claims = decodeClaims(token.trim().replace(/^Bearer\s+/i, ""));
  if (!claims[state.config.tenantClaim]) throw new Error(`The token has no "${state.config.tenantClaim}" claim.`);
  if (claims.exp && claims.exp * 1000 < Date.now()) throw new Error("The token has expired.");
  state.token = token.trim().replace(/^Bearer\s+/i, "");
  state.claims = claims;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  renderWho();
}

// A new token is tried at once on the one route every signed-in caller may use, so a token the API
// refuses sends the user back to sign-in now rather than at the first click.
async function signIn(token) {
  useToken(token);
  await api("POST", "/schedule-preview", { cronExpression: "0 0 * * *", count: 1 });
}

function signOut(message) {
  state.token = null;
  state.claims = null;
  sessionStorage.removeItem(TOKEN_KEY);
  renderWho();
  sessionStorage.setItem("sundial.signInMessage", message || "");
  if (location.hash !== "#/sign-in") location.hash = "#/sign-in";
  else render();
}

function renderWho() {
  const who = $("#who");
  if (!state.claims) { who.replaceChildren(); return; }
  who.replaceChildren(
    h("span", {}, `${state.claims.sub || "?"} · ${tenant()} · ${rolesOf(state.claims).join(", ") || "no role"}`),
    h("a", { href: "/docs", target: "_blank", rel: "noopener" }, "API docs"),
    h("button", { type: "button", onclick: () => signOut("Signed out.") }, "Sign out"),
  );
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function startOidc() {
  const oidc = state.config.oidc;
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const stateValue = base64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state: stateValue }));
  const url = new URL(oidc.authorizeUrl);
  url.search = new URLSearchParams({
    response_type: "code", client_id: oidc.clientId, redirect_uri: redirectUri(), scope: oidc.scope,
    state: stateValue, code_challenge: challenge, code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

function redirectUri() {
  return `${location.origin}${location.pathname}`;
}

// The identity provider sends the browser back to /console?code=…&state=…: trade the code for a token.
async function finishOidc() {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return;
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
  sessionStorage.removeItem(PKCE_KEY);
  history.replaceState(null, "", redirectUri() + "#/");
  if (params.has("error")) throw new Error(`Sign-in failed: ${params.get("error_description") || params.get("error")}`);
  if (!saved || saved.state !== params.get("state")) throw new Error("Sign-in failed: the answer does not match the request (state).");
  const oidc = state.config.oidc;
  const response = await fetch(oidc.tokenUrl, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri(),
      client_id: oidc.clientId, code_verifier: saved.verifier,
    }),
  });
  const tokens = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`Sign-in failed: ${tokens.error_description || tokens.error || response.status}`);
  await signIn(tokens.access_token || tokens.id_token);
}

function signInView() {
  crumbs(["Sign in"]);
  const message = sessionStorage.getItem("sundial.signInMessage");
  sessionStorage.removeItem("sundial.signInMessage");
  const problem = h("div", {});
  const fail = (error) => problem.replaceChildren(alertBox(error.message));
  const done = () => {
    const next = sessionStorage.getItem("sundial.afterSignIn") || "#/";
    sessionStorage.removeItem("sundial.afterSignIn");
    if (location.hash === next) render();
    else location.hash = next;
  };
  const cards = [];
  if (state.config.devSignIn) {
    const form = h("form", { class: "card", "aria-labelledby": "dev-title" },
      h("h2", { id: "dev-title" }, "Development sign-in"),
      h("p", { class: "muted" }, "The local stack signs a development token for whoever you say you are."),
      h("div", { class: "grid" },
        field("dev-tenant", "Tenant", h("input", { id: "dev-tenant", name: "tenant", value: "acme", required: true })),
        field("dev-sub", "User", h("input", { id: "dev-sub", name: "sub", value: "alice", required: true })),
        field("dev-role", "Role", h("select", { id: "dev-role", name: "roles" },
          ["viewer", "editor", "admin"].map((role) => h("option", { value: role, selected: role === "editor" }, role))))),
      h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Sign in")),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const data = Object.fromEntries(new FormData(form));
        const response = await fetch("/console/dev-token", {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data),
        });
        const body = await response.json();
        if (!response.ok) throw new Error(body.message || "The local stack did not sign a token.");
        await signIn(body.token);
        done();
      } catch (error) { if (error.status !== 401) fail(error); }
    });
    cards.push(form);
  }
  if (state.config.oidc) {
    cards.push(h("div", { class: "card" },
      h("h2", {}, "Single sign-on"),
      h("button", { class: "primary", type: "button", onclick: () => startOidc().catch(fail) }, "Sign in with your identity provider")));
  }
  const pasted = h("form", { class: "card", "aria-labelledby": "paste-title" },
    h("h2", { id: "paste-title" }, "Paste a token"),
    field("token", "Bearer token (JWT)", h("textarea", { id: "token", name: "token", required: true, spellcheck: "false" })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Use this token")));
  pasted.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await signIn($("#token").value); done(); } catch (error) { if (error.status !== 401) fail(error); }
  });
  cards.push(pasted);
  show(h("h1", {}, "Sign in to Sundial"), message ? alertBox(message, "info") : "", problem, ...cards);
}

// ---------------------------------------------------------------- home: choose a project
function recentProjects() {
  try { return JSON.parse(localStorage.getItem(RECENT_KEY) || "[]"); } catch { return []; }
}

function rememberProject(project) {
  const list = [project, ...recentProjects().filter((p) => p !== project)].slice(0, 8);
  localStorage.setItem(RECENT_KEY, JSON.stringify(list));
}

function homeView() {
  crumbs([tenant()]);
  const form = h("form", { class: "card toolbar" },
    h("div", { class: "grow" }, field("project", "Project id", h("input", { id: "project", name: "project", required: true, value: recentProjects()[0] || "" }))),
    h("button", { class: "primary", type: "submit" }, "Open project"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/projects/${enc($("#project").value.trim())}`;
  });
  const recent = recentProjects();
  show(h("h1", {}, "Projects"), form,
    recent.length ? h("div", { class: "card" }, h("h2", {}, "Recent"),
      h("ul", {}, recent.map((p) => h("li", {}, h("a", { href: `#/projects/${enc(p)}` }, p))))) : "");
}

// ---------------------------------------------------------------- project: triggers table
async function loadTriggers(project, agent, search, cursor) {
  const base = agent ? agentBase(project, agent) : `${projectBase(project)}/scheduled-triggers`;
  if (!search) {
    const query = new URLSearchParams({ limit: PAGE_SIZE });
    if (cursor) query.set("cursor", cursor);
    return api("GET", `${base}?${query}`);
  }
  // Search by name looks through up to SEARCH_LIMIT triggers, one request per 100.
  const needle = search.toLowerCase();
  const found = [];
  let next = null;
  let seen = 0;
  do {
    const query = new URLSearchParams({ limit: 100 });
    if (next) query.set("cursor", next);
    const page = await api("GET", `${base}?${query}`);
    seen += page.data.length;
    found.push(...page.data.filter((t) => t.name.toLowerCase().includes(needle) || t.id.includes(needle)));
    next = page.nextCursor;
  } while (next && seen < SEARCH_LIMIT);
  return { data: found, nextCursor: null, truncated: Boolean(next) };
}

function projectView(project, query) {
  rememberProject(project);
  crumbs([tenant(), "#/"], [project]);
  const agent = query.get("agent") || "";
  const search = query.get("q") || "";
  const cursors = (query.get("page") || "").split(",").filter(Boolean);
  const filters = h("form", { class: "toolbar", role: "search" },
    field("filter-agent", "Agent", h("input", { id: "filter-agent", name: "agent", value: agent, placeholder: "all agents" })),
    h("div", { class: "grow" }, field("filter-name", "Search by name", h("input", { id: "filter-name", name: "q", type: "search", value: search }))),
    h("button", { type: "submit" }, "Filter"),
    h("a", { class: "button primary", href: `#/projects/${enc(project)}/new` }, "New trigger"),
    h("a", { class: "button", href: `#/projects/${enc(project)}/invocations` }, "Project history"));
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if ($("#filter-agent").value.trim()) next.set("agent", $("#filter-agent").value.trim());
    if ($("#filter-name").value.trim()) next.set("q", $("#filter-name").value.trim());
    location.hash = `#/projects/${enc(project)}?${next}`;
  });
  const holder = h("div", {}, h("p", { class: "muted" }, "Loading triggers…"));
  show(h("h1", {}, `Triggers of ${project}`), filters, holder);
  loadTriggers(project, agent, search, cursors.at(-1)).then((page) => {
    holder.replaceChildren(triggersTable(project, page.data),
      page.truncated ? h("p", { class: "muted" }, `Searched the first ${SEARCH_LIMIT} triggers.`) : "",
      pager(cursors, page.nextCursor, (list) => {
        const next = new URLSearchParams(query);
        if (list.length) next.set("page", list.join(",")); else next.delete("page");
        location.hash = `#/projects/${enc(project)}?${next}`;
      }));
  }).catch((error) => holder.replaceChildren(alertBox(describeError(error))));
}

function pager(cursors, nextCursor, go) {
  return h("div", { class: "pager" },
    h("button", { type: "button", disabled: cursors.length === 0, onclick: () => go(cursors.slice(0, -1)) }, "Previous page"),
    h("button", { type: "button", disabled: !nextCursor, onclick: () => go([...cursors, nextCursor]) }, "Next page"));
}

function triggersTable(project, triggers) {
  if (!triggers.length) return h("div", { class: "card empty" }, "No triggers here yet.");
  const rows = triggers.map((t) => h("tr", {},
    h("td", { class: "wrap" }, h("a", { href: triggerHref(t) }, t.name)),
    h("td", {}, t.agentId),
    h("td", { class: "wrap" }, t.scheduleDescription),
    h("td", {}, t.cronTimezone),
    h("td", {}, t.ref),
    h("td", {}, enabledToggle(t)),
    h("td", {}, when(t.nextRunAt)),
    h("td", {}, when(t.lastRunAt)),
    h("td", {}, badge(t.lastRunStatus))));
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, ["Name", "Agent", "Schedule", "Zone", "Branch", "Enabled", "Next run", "Last run", "Status"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
}

function enabledToggle(t) {
  const box = h("input", { type: "checkbox", checked: t.enabled, "aria-label": `Enabled: ${t.name}` });
  box.addEventListener("change", async () => {
    box.disabled = true;
    try {
      const updated = await api("PATCH", triggerUrl(t.projectId, t.agentId, t.id), { enabled: box.checked });
      toast(`${updated.name} ${updated.enabled ? "enabled" : "disabled"}`);
      render();
    } catch (error) {
      box.checked = !box.checked;
      toast(describeError(error));
    } finally { box.disabled = false; }
  });
  return box;
}

// ---------------------------------------------------------------- trigger page
const DETAIL_FIELDS = [
  ["id", "Id"], ["agentId", "Agent"], ["description", "Description"], ["scheduleDescription", "Schedule"],
  ["cronExpression", "Cron expression"], ["cronTimezone", "Time zone"], ["runAt", "Runs at"],
  ["intervalSeconds", "Interval (s)"], ["startAt", "Starts at"], ["endAt", "Ends at"], ["maxRuns", "At most runs"],
  ["runsRemaining", "Runs remaining"], ["jitterSeconds", "Jitter (s)"], ["ref", "Branch"], ["runAsUserId", "Runs as"],
  ["maxRetries", "Retries"], ["retryDelaySeconds", "Retry delay (s)"], ["timeoutSeconds", "Timeout (s)"],
  ["overlapPolicy", "Overlap"], ["catchUpWindowSeconds", "Catch-up window (s)"], ["pauseOnFailure", "Pause on failure"],
  ["pausedReason", "Paused because"], ["finishedReason", "Finished because"], ["nextRunAt", "Next run"],
  ["lastRunAt", "Last run"], ["lastRunStatus", "Last run status"], ["lastOutcomeStatus", "Last outcome"],
  ["lastOutcomeAt", "Last outcome at"], ["missedRunsSkipped", "Missed runs skipped"], ["messageTemplate", "Message template"],
  ["payload", "Payload"], ["createdBy", "Created by"], ["createdAt", "Created"], ["updatedAt", "Updated"],
];

function shown(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "object") return h("pre", {}, JSON.stringify(value, null, 2));
  if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return when(value);
  return String(value);
}

function fieldList(object, fields) {
  return h("dl", { class: "fields" }, fields.flatMap(([key, label]) => [h("dt", {}, label), h("dd", { "data-field": key }, shown(object[key]))]));
}

async function triggerView(project, agent, id) {
  crumbs([tenant(), "#/"], [project, `#/projects/${enc(project)}`], [id]);
  show(h("p", { class: "muted" }, "Loading…"));
  const view = state.view;
  let trigger;
  try {
    trigger = await api("GET", triggerUrl(project, agent, id));
  } catch (error) {
    if (view === state.view) show(alertBox(describeError(error)));
    return;
  }
  if (view !== state.view) return;
  const invocations = h("div", {}, h("p", { class: "muted" }, "Loading invocations…"));
  const backfill = backfillDialog(trigger, () => refreshInvocations(true));
  const actions = h("div", { class: "actions" },
    runNowButton(trigger, () => refreshInvocations()),
    h("button", { type: "button", id: "backfill-open", onclick: () => backfill.open() }, "Backfill"),
    h("a", { class: "button", href: `${triggerHref(trigger)}/edit` }, "Edit"),
    h("button", { type: "button", onclick: () => setEnabled(trigger, !trigger.enabled) }, trigger.enabled ? "Disable" : "Enable"),
    h("button", { type: "button", class: "danger", onclick: () => deleteTrigger(trigger) }, "Delete"));
  const filter = invocationFilters(() => refreshInvocations(true));
  let cursors = [];
  async function refreshInvocations(reset) {
    if (reset) cursors = [];
    const query = new URLSearchParams({ limit: 10, ...filter.values() });
    if (cursors.length) query.set("cursor", cursors.at(-1));
    try {
      const page = await api("GET", `${triggerUrl(project, agent, id)}/invocations?${query}`);
      if (view !== state.view) return;
      invocations.replaceChildren(invocationsTable(trigger, page.data, refreshInvocations),
        pager(cursors, page.nextCursor, (list) => { cursors = list; refreshInvocations(); }));
    } catch (error) {
      if (view === state.view) invocations.replaceChildren(alertBox(describeError(error)));
    }
  }
  show(
    h("h1", {}, trigger.name, " ", trigger.enabled ? h("span", { class: "badge completed" }, "enabled") : h("span", { class: "badge" }, "disabled")),
    h("div", { class: "card" }, actions),
    trigger.pausedReason ? alertBox(`Paused: ${trigger.pausedReason}`, "info") : "",
    h("div", { class: "card" }, h("h2", {}, "Next runs"),
      trigger.upcomingRuns.length ? h("ol", { id: "upcoming" }, trigger.upcomingRuns.map((at) => h("li", {}, when(at)))) : h("p", { class: "muted" }, "None scheduled.")),
    h("h2", {}, "Invocations"), filter.form, invocations,
    h("h2", {}, "Fields"), h("div", { class: "card" }, fieldList(trigger, DETAIL_FIELDS)),
    backfill.dialog);
  every(POLL_MS, () => refreshInvocations());
  await refreshInvocations();
}

function invocationFilters(apply) {
  const form = h("form", { class: "toolbar", "aria-label": "Filter invocations" },
    field("inv-status", "Status", h("select", { id: "inv-status", name: "status" },
      ["", "pending", "running", "completed", "failed", "cancelled", "skipped"].map((s) => h("option", { value: s }, s || "any")))),
    field("inv-from", "From (UTC)", h("input", { id: "inv-from", name: "from", type: "datetime-local" })),
    field("inv-to", "To (UTC)", h("input", { id: "inv-to", name: "to", type: "datetime-local" })),
    h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  const values = () => {
    const out = {};
    if ($("#inv-status", form).value) out.status = $("#inv-status", form).value;
    for (const name of ["from", "to"]) {
      const value = $(`#inv-${name}`, form).value;
      if (value) out[name] = utcInstant(value);
    }
    return out;
  };
  return { form, values };
}

// A datetime-local value read as UTC, as the API takes instants.
const utcInstant = (value) => `${value.length === 16 ? `${value}:00` : value}Z`;

// Runs the schedule's occurrences in a past range [from, to); the API runs each instant once, so
// posting a range again starts nothing new, and the answer says how many this post started.
function backfillDialog(trigger, after) {
  const from = h("input", { id: "backfill-from", type: "datetime-local", step: "1", required: true });
  const to = h("input", { id: "backfill-to", type: "datetime-local", step: "1", required: true });
  const problem = h("div", { id: "backfill-problem" });
  const submit = h("button", { type: "submit", class: "primary", id: "backfill-submit" }, "Backfill");
  const dialog = h("dialog", { id: "backfill", "aria-labelledby": "backfill-title" });
  const form = h("form", {},
    h("h2", { id: "backfill-title" }, `Backfill ${trigger.name}`),
    h("p", {}, "Runs every occurrence of the schedule from From (inclusive) to To (exclusive, not in the future), now: at most 1,000. An occurrence backfilled before is not run again."),
    field("backfill-from", "Backfill from (UTC)", from), field("backfill-to", "Backfill to (UTC)", to), problem,
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dialog.close() }, "Close"), submit));
  dialog.append(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return;
    submit.disabled = true;
    for (const box of [from, to]) $(`#${box.id}-error`, form).textContent = "";
    problem.replaceChildren();
    try {
      const url = `${triggerUrl(trigger.projectId, trigger.agentId, trigger.id)}/backfill`;
      const result = await api("POST", url, { from: utcInstant(from.value), to: utcInstant(to.value) });
      const earlier = result.invocationIds.length - result.started;
      toast(`Backfill: ${result.started} started${earlier ? `, ${earlier} started before` : ""}`);
      dialog.close();
      after();
    } catch (error) {
      const placed = (error.details || []).filter((detail) => /^body\.(from|to)$/.test(detail.field || ""));
      for (const detail of placed) $(`#backfill-${detail.field.slice(5)}-error`, form).textContent = detail.message;
      if (!placed.length) problem.replaceChildren(alertBox(describeError(error)));
    } finally {
      submit.disabled = false;
    }
  });
  return { dialog, open: () => dialog.showModal() };
}

function invocationsTable(trigger, list, refresh) {
  if (!list.length) return h("div", { class: "card empty" }, "No invocations match.");
  const rows = list.map((inv) => h("tr", {},
    h("td", {}, h("a", { href: invocationHref(trigger.projectId, trigger.agentId, trigger.id, inv.id) }, inv.id)),
    h("td", {}, inv.kind), h("td", {}, badge(inv.status)), h("td", {}, when(inv.scheduledFor)),
    h("td", {}, when(inv.startedAt)), h("td", {}, when(inv.completedAt)), h("td", {}, String(inv.attempts.length)),
    h("td", {}, invocationActions(trigger, inv, refresh))));
  return h("div", { class: "table-wrap" }, h("table", { id: "invocations" },
    h("thead", {}, h("tr", {}, ["Invocation", "Kind", "Status", "Scheduled for", "Started", "Completed", "Attempts", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
}

// Cancels and reruns on their way, by invocation: polling redraws the buttons, which stay disabled.
const inFlight = new Set();

function invocationActions(trigger, inv, after) {
  const url = `${triggerUrl(trigger.projectId, trigger.agentId, trigger.id)}/invocations/${enc(inv.id)}`;
  const act = (label, verb) => h("button", {
    type: "button",
    "aria-label": `${label} ${inv.id}`,
    disabled: inFlight.has(inv.id),
    onclick: async (event) => {
      if (inFlight.has(inv.id)) return;
      inFlight.add(inv.id);
      event.currentTarget.disabled = true;
      try {
        const result = await api("POST", `${url}/${verb}`);
        toast(verb === "rerun" ? `Rerun started: ${result.invocationId}` : `Cancelled ${inv.id}`);
      } catch (error) { toast(describeError(error)); }
      inFlight.delete(inv.id);
      after();
    },
  }, label);
  if (inv.status === "pending" || inv.status === "running") return act("Cancel", "cancel");
  return act("Rerun", "rerun");
}

// One click, one run: the button is disabled while the request is out, and clicks within a few
// seconds reuse the same Idempotency-Key, so the API answers them with the same invocation.
function runNowButton(trigger, after) {
  let guard = null;
  const button = h("button", { type: "button", class: "primary", id: "run-now" }, "Run now");
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    button.disabled = true;
    if (!guard || Date.now() - guard.at > RUN_GUARD_MS) guard = { key: crypto.randomUUID(), at: Date.now() };
    try {
      const accepted = await api("POST", `${triggerUrl(trigger.projectId, trigger.agentId, trigger.id)}/run`, undefined, { "Idempotency-Key": guard.key });
      guard.at = Date.now();
      toast(`Run started: ${accepted.invocationId}`);
      after();
    } catch (error) {
      toast(describeError(error));
    } finally {
      setTimeout(() => { button.disabled = false; }, 600);
    }
  });
  return button;
}

async function setEnabled(trigger, enabled) {
  try {
    await api("PATCH", triggerUrl(trigger.projectId, trigger.agentId, trigger.id), { enabled });
    toast(enabled ? "Enabled" : "Disabled");
    render();
  } catch (error) { toast(describeError(error)); }
}

async function deleteTrigger(trigger) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = `Delete ${trigger.name}?`;
  $("#confirm-text").textContent = "Its pending and running invocations are cancelled; its history stays in the project's history.";
  dialog.returnValue = "";
  dialog.showModal();
  await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  if (dialog.returnValue !== "ok") return;
  try {
    await api("DELETE", triggerUrl(trigger.projectId, trigger.agentId, trigger.id));
    toast(`Deleted ${trigger.name}`);
    location.hash = `#/projects/${enc(trigger.projectId)}`;
  } catch (error) { toast(describeError(error)); }
}

// ---------------------------------------------------------------- invocation page
const INVOCATION_FIELDS = [
  ["id", "Id"], ["kind", "Kind"], ["status", "Status"], ["scheduledFor", "Scheduled for"], ["startsAt", "Starts at"],
  ["startedAt", "Started"], ["completedAt", "Completed"], ["ref", "Branch"], ["rerunOf", "Rerun of"],
  ["error", "Error"], ["conversationIds", "Conversations"], ["idempotencyKey", "Idempotency key"], ["executionArn", "Execution"],
];

function executionLink(arn) {
  if (!arn || !state.config.executionLinks) return shown(arn);
  const region = arn.split(":")[3];
  const href = `https://${region}.console.aws.amazon.com/states/home?region=${enc(region)}#/v2/executions/details/${arn}`;
  return h("a", { href, target: "_blank", rel: "noopener" }, "Open in Step Functions");
}

async function invocationView(project, agent, triggerId, id) {
  crumbs([tenant(), "#/"], [project, `#/projects/${enc(project)}`],
    [triggerId, `#/projects/${enc(project)}/agents/${enc(agent)}/triggers/${enc(triggerId)}`], [id]);
  const url = `${triggerUrl(project, agent, triggerId)}/invocations/${enc(id)}`;
  const view = state.view;
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  show(h("h1", {}, `Invocation ${id}`), body);
  const trigger = { projectId: project, agentId: agent, id: triggerId };
  async function refresh() {
    let inv;
    try { inv = await api("GET", url); } catch (error) {
      if (view === state.view) body.replaceChildren(alertBox(describeError(error)));
      return;
    }
    if (view !== state.view) return;
    const fields = fieldList(inv, INVOCATION_FIELDS);
    $("[data-field=status]", fields).replaceChildren(badge(inv.status));
    $("[data-field=executionArn]", fields).replaceChildren(executionLink(inv.executionArn));
    if (inv.rerunOf) $("[data-field=rerunOf]", fields).replaceChildren(h("a", { href: invocationHref(project, agent, triggerId, inv.rerunOf) }, inv.rerunOf));
    body.replaceChildren(
      h("div", { class: "card actions" }, invocationActions(trigger, inv, refresh)),
      h("div", { class: "card" }, fields),
      h("h2", {}, "Attempts"), attemptsTable(inv.attempts));
  }
  every(POLL_MS, refresh);
  await refresh();
}

function attemptsTable(attempts) {
  if (!attempts.length) return h("div", { class: "card empty" }, "No attempt yet.");
  return h("div", { class: "table-wrap" }, h("table", { id: "attempts" },
    h("thead", {}, h("tr", {}, ["#", "Started", "Ended", "Outcome", "HTTP status", "Error", "Conversation"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, attempts.map((a) => h("tr", {},
      h("td", {}, String(a.number)), h("td", {}, when(a.startedAt)), h("td", {}, when(a.endedAt)),
      h("td", {}, a.outcome, a.afterCancel ? " (after cancel)" : ""), h("td", {}, a.httpStatus ?? "—"),
      h("td", { class: "wrap" }, a.error || "—"), h("td", { class: "wrap" }, a.conversationId || "—"))))));
}

// ---------------------------------------------------------------- project history
async function historyView(project, query) {
  crumbs([tenant(), "#/"], [project, `#/projects/${enc(project)}`], ["History"]);
  const holder = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const cursors = (query.get("page") || "").split(",").filter(Boolean);
  show(h("h1", {}, `History of ${project}`), h("p", { class: "muted" }, "Every invocation of the project, newest first, deleted triggers' included."), holder);
  const params = new URLSearchParams({ limit: PAGE_SIZE });
  if (cursors.length) params.set("cursor", cursors.at(-1));
  try {
    const page = await api("GET", `${projectBase(project)}/invocations?${params}`);
    const rows = page.data.map((inv) => h("tr", {},
      h("td", {}, h("a", { href: invocationHref(project, inv.agentId, inv.triggerId, inv.id) }, inv.id)),
      h("td", {}, inv.agentId), h("td", {}, inv.triggerId), h("td", {}, inv.kind), h("td", {}, badge(inv.status)),
      h("td", {}, when(inv.scheduledFor)), h("td", {}, when(inv.completedAt))));
    holder.replaceChildren(
      rows.length ? h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Invocation", "Agent", "Trigger", "Kind", "Status", "Scheduled for", "Completed"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows))) : h("div", { class: "card empty" }, "No invocations yet."),
      pager(cursors, page.nextCursor, (list) => { location.hash = `#/projects/${enc(project)}/invocations?page=${list.join(",")}`; }));
  } catch (error) { holder.replaceChildren(alertBox(describeError(error))); }
}

// ---------------------------------------------------------------- create / edit form
function field(id, label, control, hint) {
  return h("div", { class: "field", "data-for": id },
    h("label", { for: id }, label), control,
    hint ? h("div", { class: "hint", id: `${id}-hint` }, hint) : "",
    h("div", { class: "error", id: `${id}-error`, "aria-live": "polite" }));
}

// [wire name, label, kind, hint]; kind: text | number | json | textarea | select:<a,b> | check
const FORM_FIELDS = {
  schedule: [
    ["cronExpression", "Cron expression", "text", "Five fields: minute hour day month weekday, e.g. 0 9 * * MON-FRI"],
    ["runAt", "Run once at (UTC)", "text", "ISO-8601, e.g. 2026-12-24T09:00:00Z"],
    ["intervalSeconds", "Every (seconds)", "number", "60 or more; anchored at Starts at"],
    ["cronTimezone", "Time zone", "zone", "IANA name, e.g. Europe/Berlin"],
    ["startAt", "Starts at (UTC)", "text", "optional"],
    ["endAt", "Ends at (UTC)", "text", "optional"],
    ["maxRuns", "At most runs", "number", "optional"],
    ["jitterSeconds", "Jitter (seconds)", "number", "0–3600; each run starts up to this much later"],
  ],
  run: [
    ["ref", "Branch", "branch", "the agent's git ref"],
    ["runAsUserId", "Run as user", "text", "defaults to you"],
    ["maxRetries", "Retries", "number", ""],
    ["retryDelaySeconds", "Retry delay (seconds)", "number", ""],
    ["timeoutSeconds", "Timeout (seconds)", "number", "per attempt"],
    ["catchUpWindowSeconds", "Catch-up window (seconds)", "number", "how late a missed run may still start"],
    ["overlapPolicy", "Overlap", "select:allow,skip,buffer_one,cancel_other", "when another run of the trigger is unfinished: run anyway, skip, wait for it (one waits), or cancel it"],
    ["pauseOnFailure", "Pause after a failed scheduled run", "check", ""],
    ["enabled", "Enabled", "check", ""],
  ],
  message: [
    ["payload", "Payload (JSON object)", "json", "given to the message template"],
    ["messageTemplate", "Message template", "textarea", "e.g. Write the {{topic}} report for {{scheduledFor}}"],
  ],
};
const SCHEDULE_KINDS = { cron: "cronExpression", once: "runAt", interval: "intervalSeconds" };
const KIND_ONLY = { cronExpression: ["cron"], runAt: ["once"], intervalSeconds: ["interval"], cronTimezone: ["cron"], jitterSeconds: ["cron", "interval"], maxRuns: ["cron", "interval"], startAt: ["cron", "interval"], endAt: ["cron", "interval"] };
const DEFAULTS = { cronTimezone: "UTC", jitterSeconds: 0, ref: "main", maxRetries: 1, retryDelaySeconds: 60, timeoutSeconds: 780, catchUpWindowSeconds: 3600, overlapPolicy: "allow", pauseOnFailure: false, enabled: true };

function control(name, kind, value, branches) {
  const id = `f-${name}`;
  if (kind === "check") return h("input", { id, name, type: "checkbox", checked: value });
  if (kind.startsWith("select:")) {
    return h("select", { id, name }, kind.slice(7).split(",").map((option) => h("option", { value: option, selected: option === value }, option)));
  }
  if (kind === "json") return h("textarea", { id, name, spellcheck: "false", value: value == null ? "" : JSON.stringify(value, null, 2) });
  if (kind === "textarea") return h("textarea", { id, name, value: value ?? "" });
  const attrs = { id, name, value: value ?? "", autocomplete: "off" };
  if (kind === "number") Object.assign(attrs, { type: "number", inputmode: "numeric" });
  if (kind === "zone") attrs.list = "zones";
  if (kind === "branch") attrs.list = "branches";
  return h("input", attrs);
}

function readControl(form, name, kind) {
  const node = $(`#f-${name}`, form);
  if (kind === "check") return node.checked;
  if (node.validity && node.validity.badInput) throw new FieldError(name, "is not a number");
  const text = node.value.trim();
  if (text === "") return null;
  if (kind === "number") return /^-?\d+$/.test(text) ? Number(text) : text;
  if (kind === "json") {
    try { return JSON.parse(text); } catch { throw new FieldError(name, "is not valid JSON"); }
  }
  return text;
}

class FieldError extends Error {
  constructor(name, message) { super(message); this.field = name; }
}

function kindOf(trigger) {
  if (trigger.runAt) return "once";
  if (trigger.intervalSeconds) return "interval";
  return "cron";
}

async function formView(project, agent, id) {
  const editing = Boolean(id);
  const view = state.view;
  let trigger = { ...DEFAULTS, projectId: project };
  if (editing) {
    try { trigger = await api("GET", triggerUrl(project, agent, id)); } catch (error) {
      if (view === state.view) show(alertBox(describeError(error)));
      return;
    }
    if (view !== state.view) return;
  }
  crumbs([tenant(), "#/"], [project, `#/projects/${enc(project)}`], ...(editing ? [[trigger.name, triggerHref(trigger)], ["Edit"]] : [["New trigger"]]));
  let kind = kindOf(trigger);
  const allFields = [...FORM_FIELDS.schedule, ...FORM_FIELDS.run, ...FORM_FIELDS.message];
  const group = (fields) => h("div", { class: "grid" }, fields.map(([name, label, type, hint]) => {
    const box = field(`f-${name}`, label, control(name, type, trigger[name]), hint);
    if (type === "json" || type === "textarea") box.classList.add("wide");
    return box;
  }));
  const identity = h("div", { class: "grid" },
    editing ? "" : field("f-agentId", "Agent", h("input", { id: "f-agentId", name: "agentId", required: true, value: agent || "" })),
    editing ? "" : field("f-id", "Id (optional)", h("input", { id: "f-id", name: "id" }), "letters, digits, - and _; generated when empty"),
    field("f-name", "Name", h("input", { id: "f-name", name: "name", required: true, value: trigger.name || "" })),
    field("f-description", "Description", h("input", { id: "f-description", name: "description", value: trigger.description || "" })));
  const kinds = h("div", { class: "kinds", role: "radiogroup", "aria-label": "Schedule kind" },
    Object.keys(SCHEDULE_KINDS).map((k) => h("label", { class: "check" },
      h("input", { type: "radio", name: "kind", value: k, checked: k === kind, onchange: () => { kind = k; applyKind(); preview(); } }),
      { cron: "Cron", once: "One time", interval: "Interval" }[k])));
  const previewBox = h("div", { class: "preview", id: "preview", "aria-live": "polite" }, "Type a schedule to see its next runs.");
  const problems = h("div", {});
  const submit = h("button", { class: "primary", type: "submit" }, editing ? "Save changes" : "Create trigger");
  const form = h("form", { novalidate: true },
    problems,
    h("fieldset", {}, h("legend", {}, "Trigger"), identity),
    h("fieldset", {}, h("legend", {}, "Schedule"), kinds, group(FORM_FIELDS.schedule), h("h3", { class: "muted" }, "Preview"), previewBox),
    h("fieldset", {}, h("legend", {}, "Run"), group(FORM_FIELDS.run)),
    h("fieldset", {}, h("legend", {}, "Message"), group(FORM_FIELDS.message)),
    h("datalist", { id: "zones" }, (Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : ["UTC"]).map((z) => h("option", { value: z }))),
    h("datalist", { id: "branches" }),
    h("div", { class: "actions" }, submit, h("a", { class: "button", href: editing ? triggerHref(trigger) : `#/projects/${enc(project)}` }, "Cancel")));
  show(h("h1", {}, editing ? `Edit ${trigger.name}` : "New trigger"), form);
  fillBranches(project);

  function applyKind() {
    for (const [name, kinds] of Object.entries(KIND_ONLY)) {
      $(`[data-for="f-${name}"]`).hidden = !kinds.includes(kind);
    }
  }
  applyKind();

  function clearErrors() {
    form.querySelectorAll(".field").forEach((box) => {
      box.classList.remove("invalid");
      const input = $("input, select, textarea", box);
      if (input) input.removeAttribute("aria-invalid");
      $(".error", box).textContent = "";
    });
    problems.replaceChildren();
  }

  function markErrors(details, fallback, only) {
    const unplaced = [];
    for (const detail of details) {
      const name = String(detail.field || "").replace(/^body\.?/, "").split(".")[0];
      const box = name && $(`[data-for="f-${name}"]`);
      if (box && !box.hidden && (!only || only.includes(name))) {
        box.classList.add("invalid");
        $("input, select, textarea", box).setAttribute("aria-invalid", "true");
        $(".error", box).textContent = detail.message;
      } else if (!only) unplaced.push(detail.field ? `${detail.field}: ${detail.message}` : detail.message);
    }
    if (!details.length && fallback) unplaced.push(fallback);
    if (unplaced.length) problems.replaceChildren(alertBox(unplaced.join("; ")));
  }

  const scheduleNames = ["cronExpression", "runAt", "intervalSeconds", "cronTimezone", "startAt", "endAt", "maxRuns", "jitterSeconds"];
  const typeOf = Object.fromEntries(allFields.map(([name, , type]) => [name, type]));
  function scheduleBody() {
    const body = {};
    for (const name of scheduleNames) {
      if (!KIND_ONLY[name].includes(kind)) continue;
      const value = readControl(form, name, typeOf[name]);
      if (value !== null) body[name] = value;
    }
    return body;
  }

  let previewTicket = 0;
  async function preview() {
    if (view !== state.view) return;
    const ticket = ++previewTicket;
    const body = scheduleBody();
    form.querySelectorAll(scheduleNames.map((n) => `[data-for="f-${n}"]`).join(",")).forEach((box) => {
      box.classList.remove("invalid");
      $(".error", box).textContent = "";
      $("input, select, textarea", box).removeAttribute("aria-invalid");
    });
    if (!body[SCHEDULE_KINDS[kind]]) { previewBox.replaceChildren("Type a schedule to see its next runs."); return; }
    try {
      const result = await api("POST", "/schedule-preview", { ...body, count: 5 });
      if (ticket !== previewTicket) return;
      previewBox.replaceChildren(h("strong", {}, result.scheduleDescription),
        result.nextRuns.length ? h("ol", {}, result.nextRuns.map((at) => h("li", {}, when(at)))) : h("p", {}, "No run ahead."));
    } catch (error) {
      if (ticket !== previewTicket) return;
      previewBox.replaceChildren(h("span", {}, `No preview: ${error.message}`));
      markErrors(error.details, null, scheduleNames);
    }
  }
  let debounce = null;
  for (const name of scheduleNames) {
    $(`#f-${name}`).addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(preview, 250); });
  }
  preview();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return;
    clearErrors();
    let body;
    try { body = formBody(); } catch (error) {
      if (error instanceof FieldError) { markErrors([{ field: error.field, message: error.message }]); return; }
      throw error;
    }
    if (editing && !Object.keys(body).length) { problems.replaceChildren(alertBox("Nothing changed.", "info")); return; }
    submit.disabled = true;
    try {
      const targetAgent = editing ? agent : $("#f-agentId").value.trim();
      if (!targetAgent) { markErrors([{ field: "agentId", message: "Field required" }]); return; }
      const saved = editing
        ? await api("PATCH", triggerUrl(project, agent, id), body)
        : await api("POST", agentBase(project, targetAgent), body);
      toast(editing ? "Saved" : `Created ${saved.name}`);
      location.hash = triggerHref(saved);
    } catch (error) {
      markErrors(error.details, describeError(error));
    } finally { submit.disabled = false; }
  });

  // A new trigger sends every field that is set; an edit sends only what changed (null clears a field).
  function formBody() {
    const body = {};
    const values = { name: $("#f-name").value.trim(), description: $("#f-description").value.trim() || null };
    if (!editing && $("#f-id").value.trim()) values.id = $("#f-id").value.trim();
    for (const [name, , type] of allFields) {
      if (KIND_ONLY[name] && !KIND_ONLY[name].includes(kind)) continue;
      values[name] = readControl(form, name, type);
    }
    for (const [name, value] of Object.entries(values)) {
      if (!editing) {
        if (value !== null && value !== "") body[name] = value;
      } else if (JSON.stringify(value) !== JSON.stringify(trigger[name] ?? null)) {
        body[name] = value;
      }
    }
    if (editing && kind !== kindOf(trigger)) body[SCHEDULE_KINDS[kind]] = values[SCHEDULE_KINDS[kind]];
    return body;
  }
}

async function fillBranches(project) {
  try {
    const page = await api("GET", `${projectBase(project)}/scheduled-triggers?limit=100`);
    const branches = [...new Set(["main", ...page.data.map((t) => t.ref)])].sort();
    $("#branches")?.replaceChildren(...branches.map((b) => h("option", { value: b })));
  } catch { /* the branch list is a convenience; the field takes any ref */ }
}

// ---------------------------------------------------------------- router
const ROUTES = [
  [/^#\/projects\/([^/?]+)\/agents\/([^/?]+)\/triggers\/([^/?]+)\/invocations\/([^/?]+)$/, invocationView],
  [/^#\/projects\/([^/?]+)\/agents\/([^/?]+)\/triggers\/([^/?]+)\/edit$/, (p, a, t) => formView(p, a, t)],
  [/^#\/projects\/([^/?]+)\/agents\/([^/?]+)\/triggers\/([^/?]+)$/, triggerView],
  [/^#\/projects\/([^/?]+)\/new$/, (p) => formView(p, null, null)],
  [/^#\/projects\/([^/?]+)\/invocations(?:\?(.*))?$/, (p, q) => historyView(p, new URLSearchParams(q || ""))],
  [/^#\/projects\/([^/?]+)(?:\?(.*))?$/, (p, q) => projectView(p, new URLSearchParams(q || ""))],
];

function render() {
  stopTimers();
  state.view += 1;
  const hash = location.hash || "#/";
  if (!state.token) {
    if (hash !== "#/sign-in") sessionStorage.setItem("sundial.afterSignIn", hash);
    signInView();
    return;
  }
  if (hash === "#/sign-in") { homeView(); return; }
  for (const [pattern, view] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      view(...match.slice(1).map((part) => (part === undefined ? undefined : decodeURIComponent(part))));
      $("#main").focus({ preventScroll: true });
      return;
    }
  }
  homeView();
}

async function start() {
  $(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    $("#main").focus();
  });
  try {
    const response = await fetch("/console/config.json");
    state.config = await response.json();
  } catch (error) {
    show(alertBox(`The console could not read its settings: ${error.message}`));
    return;
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try { useToken(saved); } catch { sessionStorage.removeItem(TOKEN_KEY); }
  }
  try { await finishOidc(); } catch (error) {
    if (error.status !== 401) sessionStorage.setItem("sundial.signInMessage", error.message);
  }
  window.addEventListener("hashchange", render);
  render();
}

start();
