// socklab's live page: polls /live.json with a cursor (only what changed comes back), filters and pages
// in the browser, draws the topology and the flows of the page shown as SVG. Every string that comes
// from a record reaches the document as text (textContent, setAttribute), never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 400;
const BAND_GAP = 120;
const COLUMN = 180;

const model = {
  flows: new Map(), // flow id -> flow map as /live.json sends it, in first-seen order
  cursor: 0,
  state: "",
  pictureVersion: "",
  picture: { networks: [], nodes: [] },
  natchecks: [],
  counts: {},
  selected: null,
  page: 0,
  dirty: true,
  shownFor: "", // the filters the page was last drawn with
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function verdictOf(flow) {
  // the verdict as a class name: any verdict word the collector may add (hairpin, ...), never other text
  return /^[a-z][a-z-]*$/.test(String(flow.verdict)) ? flow.verdict : "unmatched";
}

function formatName(name) {
  if (name === null || name === undefined) return "-";
  if (typeof name === "string") return name === "" ? "(unnamed)" : name;
  if (!Array.isArray(name)) return JSON.stringify(name);
  const [host, port] = name;
  if (String(host).includes(":")) {
    const scope = name.length === 4 && name[3] ? `%${name[3]}` : "";
    return `[${host}${scope}]:${port}`;
  }
  return `${host}:${port}`;
}

function describeVerdict(flow) {
  let text = String(flow.verdict);
  if ((flow.verdict === "snat" || flow.verdict === "proxied") && flow.port_preserved !== null) {
    text += flow.port_preserved ? ", port kept" : ", port changed";
  }
  return text;
}

function cells(flow) {
  const c = flow.client, s = flow.server;
  return [
    flow.scenario || flow.proto,
    `${c ? c.service : "?"} → ${s ? s.service : "?"}`,
    c ? `${formatName(c.sockname)} → ${formatName(c.peername)}` : "-",
    s ? `${formatName(s.peername)} → ${formatName(s.sockname)}` : "-",
  ];
}

// ---- filters ----------------------------------------------------------------------------------

function filters() {
  const form = document.getElementById("filters");
  const value = (name) => form.elements[name].value;
  return {
    verdict: value("verdict"), service: value("service"), proto: value("proto"),
    family: value("family"), scenario: value("scenario"), search: value("search").trim().toLowerCase(),
    size: Number(value("size")) || 500,
  };
}

function searchable(flow) {
  const parts = [flow.flow, flow.scenario || "", flow.verdict];
  for (const end of [flow.client, flow.server]) {
    if (end) parts.push(end.service, end.host, end.node || "", formatName(end.sockname), formatName(end.peername));
  }
  return parts.join(" ").toLowerCase();
}

function matches(flow, f) {
  const services = [flow.client, flow.server].filter(Boolean).map((end) => end.service);
  return (!f.verdict || flow.verdict === f.verdict)
    && (!f.service || services.includes(f.service))
    && (!f.proto || flow.proto === f.proto)
    && (!f.family || flow.family === f.family)
    && (!f.scenario || (flow.scenario || "") === f.scenario)
    && (!f.search || searchable(flow).includes(f.search));
}

function refreshChoices(select, words) {
  const have = new Set(Array.from(select.options, (o) => o.value));
  for (const word of [...words].sort()) {
    if (!have.has(word)) select.append(el("option", { value: word }, word));
  }
}

// ---- the picture ------------------------------------------------------------------------------

function bandOrder(networks, nodes) {
  // the order of bands that keeps each node's networks closest together (all orders for a few bands)
  const ids = networks.map((n) => n.id);
  const spans = nodes.map((node) => Object.keys(node.addresses).filter((id) => ids.includes(id)));
  const cost = (order) => spans.reduce((sum, span) => {
    const at = span.map((id) => order.indexOf(id));
    return sum + (at.length ? Math.max(...at) - Math.min(...at) : 0);
  }, 0);
  if (ids.length > 7) return ids;
  let best = ids, bestCost = cost(ids);
  const permute = (rest, prefix) => {
    if (!rest.length) {
      const c = cost(prefix);
      if (c < bestCost) { best = prefix; bestCost = c; }
      return;
    }
    rest.forEach((id, i) => permute([...rest.slice(0, i), ...rest.slice(i + 1)], [...prefix, id]));
  };
  permute(ids, []);
  return best;
}

function layout(picture) {
  // a network only one node sits on (a host's own uplink, docker0) carries no flow between two: not drawn
  const members = (id) => picture.nodes.filter((n) => id in n.addresses).length;
  const networks = picture.networks.filter((n) => members(n.id) >= 2);
  const nodes = picture.nodes;
  if (nodes.some((n) => !Object.keys(n.addresses).some((id) => networks.some((x) => x.id === id)))) {
    networks.push({ id: "elsewhere", subnets: ["elsewhere: loopback, outside the stack"], gateways: [] });
  }
  const order = bandOrder(networks, nodes);
  const bandY = new Map(order.map((id, i) => [id, 70 + i * BAND_GAP]));
  const bandsOf = (node) => {
    const on = Object.keys(node.addresses).filter((id) => bandY.has(id));
    return on.length ? on : ["elsewhere"];
  };
  const placed = nodes.map((node) => {
    const ys = bandsOf(node).map((id) => bandY.get(id));
    return { node, top: Math.min(...ys), bottom: Math.max(...ys) };
  });
  placed.sort((a, b) => a.top - b.top || a.bottom - b.bottom || a.node.kind.localeCompare(b.node.kind)
    || a.node.label.localeCompare(b.node.label));
  const where = new Map();
  placed.forEach((p, i) => {
    const x = 230 + i * COLUMN;
    let y = p.top === p.bottom ? p.top - 42 : (p.top + p.bottom) / 2;
    if (p.top !== p.bottom && [...bandY.values()].some((band) => Math.abs(band - y) < 30)) y += BAND_GAP / 2;
    where.set(p.node.id, { x, y, node: p.node });
  });
  const width = 230 + Math.max(placed.length, 3) * COLUMN;
  const height = 70 + Math.max(order.length - 1, 0) * BAND_GAP + 60;
  return { networks, order, bandY, where, width, height };
}

function subtitle(node, networks) {
  // what kind of host a node is: an inferred router, the Docker host (on every bridge, the gateway of one), or its name
  if (node.kind === "router") return "router (inferred: rewrote sources)";
  if (node.rewrote) return "rewrote flows between others";
  const owned = Object.values(node.addresses).flat();
  const bridges = networks.filter((n) => n.id !== "elsewhere");
  const onEvery = bridges.length >= 2 && bridges.every((n) => n.id in node.addresses);
  if (onEvery && bridges.some((n) => n.gateways.some((g) => owned.includes(g)))) return "Docker host (bridge gateways)";
  return node.id.replace(/^host:/, "");
}

function drawPicture(flowsShown) {
  const picture = document.getElementById("picture");
  const plan = layout(model.picture);
  picture.setAttribute("viewBox", `0 0 ${plan.width} ${plan.height}`);
  const layers = { bands: svg("g"), flows: svg("g"), nodes: svg("g") };
  for (const network of plan.networks) {
    if (!plan.bandY.has(network.id)) continue;
    const y = plan.bandY.get(network.id);
    const band = svg("g", { class: "band", "data-network": network.id });
    band.append(svg("line", { x1: 10, y1: y, x2: plan.width - 10, y2: y }));
    band.append(svg("text", { x: 12, y: y - 22 }, network.subnets.join("  ")));
    if (network.gateways.length) band.append(svg("text", { x: 12, y: y - 8, class: "gw" }, `gateway ${network.gateways.join(", ")}`));
    layers.bands.append(band);
  }
  for (const { x, y, node } of plan.where.values()) {
    const group = svg("g", { class: `node ${node.kind === "router" ? "router" : "host"}`, "data-node": node.id });
    const legs = Object.entries(node.addresses).filter(([id]) => plan.bandY.has(id));
    for (const [networkId, addresses] of legs.length ? legs : [["elsewhere", []]]) {
      const bandY = plan.bandY.get(networkId);
      group.append(svg("line", { class: "leg", x1: x, y1: y, x2: x, y2: bandY }));
      group.append(svg("circle", { class: "junction", cx: x, cy: bandY, r: 4 }));
      addresses.forEach((address, i) => {
        group.append(svg("text", { class: "addr", x: x + 7, y: bandY + 14 + i * 12 }, address));
      });
    }
    group.append(svg("rect", { x: x - 70, y: y - 18, width: 140, height: 36 }));
    const label = node.services.length ? node.services.join(", ") : node.label;
    group.append(svg("text", { x: x - 64, y: y - 3 }, label.length > 22 ? `${label.slice(0, 21)}…` : label));
    group.append(svg("text", { class: "kind", x: x - 64, y: y + 12 }, subtitle(node, plan.networks)));
    layers.nodes.append(group);
  }
  const bundles = new Map();
  for (const flow of flowsShown) {
    const stops = (flow.line || []).map((id) => plan.where.get(id)).filter(Boolean);
    if (!stops.length) stops.push({ x: 20, y: plan.height - 20 }); // its hosts not yet in the picture: a stub
    const key = (flow.line || []).join(">");
    const n = bundles.get(key) || 0;
    bundles.set(key, n + 1);
    const bend = ((n % 24) - 12) * 3;
    let d = `M ${stops[0].x} ${stops[0].y}`;
    if (stops.length === 1) d += ` l ${60 + bend / 4} -45`; // one end only: a stub from the end that reported
    for (let i = 1; i < stops.length; i++) {
      const a = stops[i - 1], b = stops[i];
      d += ` Q ${(a.x + b.x) / 2 + bend} ${(a.y + b.y) / 2 - 30 + bend} ${b.x} ${b.y}`;
    }
    const path = svg("path", { d, class: `flow ${verdictOf(flow)}`, "data-flow": flow.flow });
    if (flow.flow === model.selected) path.classList.add("selected");
    path.append(svg("title", {}, `${cells(flow)[0]} ${cells(flow)[1]}: ${describeVerdict(flow)}`));
    path.addEventListener("click", () => select(flow.flow));
    layers.flows.append(path);
  }
  picture.replaceChildren(layers.bands, layers.flows, layers.nodes);
}

// ---- the list, the detail, the NAT checks -----------------------------------------------------

function drawList(shown, total, matching, pages) {
  const body = document.querySelector("#flows tbody");
  const rows = shown.map((flow) => {
    const row = el("tr", { "data-row": flow.flow });
    for (const cell of cells(flow)) row.append(el("td", {}, cell));
    row.append(el("td", { class: verdictOf(flow) }, describeVerdict(flow)));
    if (flow.flow === model.selected) row.classList.add("selected");
    row.addEventListener("click", () => select(flow.flow));
    return row;
  });
  body.replaceChildren(...rows);
  document.getElementById("page-info").textContent =
    `page ${model.page + 1} of ${pages}: ${shown.length} shown, ${matching} match, ${total} flows`;
  document.getElementById("newer").disabled = model.page === 0;
  document.getElementById("older").disabled = model.page >= pages - 1;
}

function describeEnd(title, end, mine, theirs) {
  const list = el("dl");
  const add = (term, value) => list.append(el("dt", {}, term), el("dd", {}, value));
  if (!end) return el("div", {}, el("h3", {}, title), el("p", { class: "empty" }, "this end never reported"));
  add("service", end.service);
  add("host", end.host);
  add("node", end.node || "(not said)");
  add(mine, formatName(end.sockname));
  add(theirs, formatName(end.peername));
  for (const [key, value] of Object.entries(end)) {
    if (!["service", "host", "node", "family", "sockname", "peername"].includes(key)) add(key, JSON.stringify(value));
  }
  return el("div", {}, el("h3", {}, title), list);
}

function drawDetail() {
  const detail = document.getElementById("detail");
  const flow = model.flows.get(model.selected);
  if (!flow) { detail.hidden = true; return; }
  detail.hidden = false;
  const known = ["flow", "proto", "family", "scenario", "client", "server", "verdict", "port_preserved", "line", "path"];
  const parts = [
    el("h2", {}, `flow ${flow.flow}: ${flow.scenario || flow.proto} (${flow.family}), ${describeVerdict(flow)}`),
    el("div", { class: "views" },
      describeEnd("client sees", flow.client, "me", "peer"),
      describeEnd("server sees", flow.server, "me", "peer")),
  ];
  if (Array.isArray(flow.path) && flow.path.length) {
    parts.push(el("h3", {}, "path"));
    const hops = el("ol");
    for (const hop of flow.path) {
      const words = [hop.by, hop.kind, hop.rule].filter((w) => w !== undefined && w !== null).join(" ");
      const evidence = el("details", {}, el("summary", {}, "evidence"),
        el("pre", {}, JSON.stringify(hop.evidence || {}, null, 1)));
      hops.append(el("li", {}, `${words}: ${formatName(hop.before)} → ${formatName(hop.after)}`, evidence));
    }
    parts.push(hops);
  }
  const evidence = Object.entries(flow).filter(([key, value]) => !known.includes(key) && value !== null);
  if (evidence.length) {
    parts.push(el("h3", {}, "evidence"));
    for (const [key, value] of evidence) parts.push(el("pre", {}, `${key}: ${JSON.stringify(value, null, 1)}`));
  }
  parts.push(el("p", { class: "empty" }, `drawn through: ${(flow.line || []).join(" → ")}`));
  detail.replaceChildren(...parts);
}

function drawNatchecks() {
  const newest = new Map();
  for (const check of model.natchecks) newest.set(check.service, check);
  const rows = [];
  for (const check of newest.values()) {
    const row = el("tr", { "data-natcheck": check.service });
    for (const cell of [check.service, check.mapping, check.filtering, check.port_preserved ? "kept" : "changed",
      check.hairpin ? "yes" : "no", formatName(check.mapped_address), new Date(check.time * 1000).toLocaleTimeString()]) {
      row.append(el("td", {}, cell));
    }
    rows.push(row);
    const tests = el("details", {}, el("summary", {}, `${(check.tests || []).length} transactions`));
    for (const test of check.tests || []) {
      const answer = test.error ? `error ${test.error.join(" ")}` : test.mapped ? `${formatName(test.mapped)} from ${formatName(test.source)}` : "no answer";
      tests.append(el("div", {}, `${test.name}: to ${formatName(test.destination)} -> ${answer}`));
    }
    rows.push(el("tr", {}, el("td", { colspan: "7" }, tests)));
  }
  document.querySelector("#natchecks tbody").replaceChildren(...rows);
  document.querySelector("#natchecks .empty").hidden = newest.size > 0;
}

function select(flowId) {
  model.selected = model.selected === flowId ? null : flowId;
  model.dirty = true;
  render();
}

function render() {
  // drawn when something changed: a flow, a click, or the filters (read on every poll too, so a change that
  // fired no event, such as a browser restoring a form or a scripted choice, is drawn within one poll)
  const f = filters();
  const shownFor = JSON.stringify(f);
  if (shownFor !== model.shownFor) {
    model.shownFor = shownFor;
    model.page = 0; // other filters: from their first page
    model.dirty = true;
  }
  if (model.dirty) {
    model.dirty = false;
    const all = Array.from(model.flows.values()).reverse(); // newest first
    const matching = all.filter((flow) => matches(flow, f));
    const pages = Math.max(1, Math.ceil(matching.length / f.size));
    model.page = Math.min(model.page, pages - 1);
    const shown = matching.slice(model.page * f.size, (model.page + 1) * f.size);
    drawPicture(shown);
    drawList(shown, all.length, matching.length, pages);
    drawDetail();
    drawNatchecks();
    const c = model.counts;
    const refused = Object.values(c.refused || {}).reduce((sum, n) => sum + n, 0);
    document.getElementById("status").textContent =
      `${all.length} flows, ${c.records} records, ${c.rejected} rejected, ${refused} refused · live, ${new Date().toLocaleTimeString()}`;
  }
}

// ---- polling ----------------------------------------------------------------------------------

function take(answer) {
  const services = new Set(), scenarios = new Set();
  for (const flow of answer.flows) {
    model.flows.set(flow.flow, flow);
    for (const end of [flow.client, flow.server]) if (end) services.add(end.service);
    if (flow.scenario) scenarios.add(flow.scenario);
  }
  const form = document.getElementById("filters");
  refreshChoices(form.elements.service, services);
  refreshChoices(form.elements.scenario, scenarios);
  model.counts = answer;
  if (answer.picture) {
    model.picture = answer.picture;
    model.natchecks = answer.natchecks;
    const version = answer.state.split(".")[0];
    if (version !== model.pictureVersion && model.cursor > 0) {
      model.cursor = 0; // the picture changed: ask again for every flow's line through it
      model.pictureVersion = version;
      model.state = answer.state;
      model.dirty = true;
      return;
    }
    model.pictureVersion = version;
  }
  model.state = answer.state;
  model.cursor = answer.cursor;
  if (answer.flows.length || answer.picture) model.dirty = true;
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const response = await fetch(`live.json?since=${model.cursor}&state=${encodeURIComponent(model.state)}`,
      { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    take(await response.json());
    status.classList.remove("stale");
    render();
  } catch (error) {
    status.classList.add("stale");
    status.textContent = `the collector does not answer (${error.message}); retrying`;
  }
  setTimeout(poll, POLL_MS);
}

function turn(page) {
  model.page = Math.max(0, page);
  model.dirty = true;
  render();
}

for (const kind of ["input", "change"]) document.getElementById("filters").addEventListener(kind, render);
document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
document.getElementById("newer").addEventListener("click", () => turn(model.page - 1));
document.getElementById("older").addEventListener("click", () => turn(model.page + 1));
poll();
