// The wall screen: one EventSource per page; each event carries the latest LiveFlow snapshot (the contract's
// JSON mapping: 64-bit counts arrive as strings, reasons as names, times as RFC 3339) and the feed's status.
"use strict";

const park = document.body.dataset.park;
const SVG = "http://www.w3.org/2000/svg";
const W = 600, H = 200, PAD = 24;

const num = (v) => Number(v || 0);
const $ = (id) => document.getElementById(id);
const hhmm = (iso) => iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
const hhmmss = (iso) => iso ? new Date(iso).toLocaleTimeString() : "";

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function axis(svg, minutes, top) {
  svg.append(svgEl("line", { x1: PAD, y1: H - PAD, x2: W, y2: H - PAD, stroke: "#444" }));
  const label = svgEl("text", { x: 2, y: PAD - 8 });
  label.textContent = String(top);
  svg.append(label);
  if (minutes.length) {
    for (const [i, anchor] of [[0, "start"], [minutes.length - 1, "end"]]) {
      const t = svgEl("text", { x: i === 0 ? PAD : W, y: H - 6, "text-anchor": anchor });
      t.textContent = hhmm(minutes[i].minute);
      svg.append(t);
    }
  }
}

function drawFlow(minutes) {
  const svg = $("flow-chart");
  svg.replaceChildren();
  const top = Math.max(1, ...minutes.map((m) => Math.max(num(m.entries), num(m.exits), num(m.refusals))));
  const slot = (W - PAD) / Math.max(1, minutes.length);
  const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
  minutes.forEach((m, i) => {
    const x = PAD + i * slot;
    for (const [kind, value, offset] of [["in", num(m.entries), 0.1], ["out", num(m.exits), 0.5]]) {
      if (value > 0) {
        svg.append(svgEl("rect", { class: kind, x: x + slot * offset, width: slot * 0.4, y: y(value),
                                   height: H - PAD - y(value), "data-minute": m.minute }));
      }
    }
  });
  const points = minutes.map((m, i) => `${PAD + (i + 0.5) * slot},${y(num(m.refusals))}`).join(" ");
  svg.append(svgEl("polyline", { class: "refused", points }));
  axis(svg, minutes, top);
}

function drawOccupancy(minutes, capacity) {
  const svg = $("occupancy-chart");
  svg.replaceChildren();
  const top = Math.max(1, capacity, ...minutes.map((m) => num(m.inside)));
  const slot = (W - PAD) / Math.max(1, minutes.length - 1);
  const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
  const line = minutes.map((m, i) => `${PAD + i * slot},${y(num(m.inside))}`);
  if (line.length) {
    svg.append(svgEl("polygon", { class: "occ", points: `${PAD},${H - PAD} ${line.join(" ")} ${W},${H - PAD}` }));
  }
  if (capacity > 0) svg.append(svgEl("line", { class: "cap", x1: PAD, x2: W, y1: y(capacity), y2: y(capacity) }));
  axis(svg, minutes, top);
}

function drawGates(gates) {
  const box = $("gates");
  box.replaceChildren(...gates.map((g) => {
    const state = g.connected ? (g.state || "ok") : "offline";
    const tile = el("div", { class: `tile ${g.connected ? (state === "ok" ? "" : "warn") : "offline"}`,
                             "data-gate": g.device_id, "data-state": state });
    tile.append(el("h3", {}, g.device_id), el("span", { class: "state-word" }, state));
    const dl = el("dl");
    for (const [name, key] of [["in", "entries"], ["out", "exits"], ["refused", "refusals"]]) {
      dl.append(el("dt", {}, name), el("dd", { class: key }, String(num(g[key]))));
    }
    tile.append(dl);
    if (g.last_heartbeat) tile.title = `last heartbeat ${hhmmss(g.last_heartbeat)} on ${g.server_id}`;
    return tile;
  }));
  if (!gates.length) box.replaceChildren(el("p", { class: "none" }, "no gates registered"));
}

function drawList(id, items, empty, make) {
  const list = $(id);
  list.replaceChildren(...items.map(make));
  if (!items.length) list.replaceChildren(el("li", { class: "none" }, empty));
}

function drawAlerts(alerts) {
  drawList("alerts", alerts, "no alerts in the last hour", (a) => {
    const li = el("li", { class: a.kind, "data-kind": a.kind, "data-request": a.request_id });
    li.append(el("time", {}, hhmmss(a.at)),
              el("b", {}, a.kind.replaceAll("_", " ")),
              document.createTextNode(` ${a.device_id}: ${a.reason}${a.detail ? " (" + a.detail + ")" : ""}`));
    return li;
  });
}

// S15: admissions held for a check. Items are kept by gate and request so a photo loads once and a confirmation
// in flight (or just answered) stays on screen after the snapshot stops listing the check; answered ones go
// after a minute.
const held = new Map();  // "gate request" -> { li, outcome: undefined | "pending" | "acknowledged" | ... }
const KEEP_ANSWERED_MS = 60_000;

async function confirmCheck(check, entry) {
  const button = entry.li.querySelector("button");
  const result = entry.li.querySelector(".result");
  button.disabled = true;
  entry.outcome = "pending";
  result.dataset.result = "pending";
  result.textContent = "sending to the gate...";
  let outcome, text;
  try {
    const reply = await fetch(`/api/parks/${encodeURIComponent(park)}/checks/confirm`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: check.device_id, request_id: check.request_id }),
    });
    const body = await reply.json();
    if (!reply.ok) [outcome, text] = ["error", `refused: ${body.error}`];
    else if (body.delivered) [outcome, text] = ["acknowledged", `gate ${check.device_id} acknowledged: opening`];
    else [outcome, text] = ["not-acknowledged", `gate ${check.device_id} did not acknowledge (offline?)`];
  } catch (err) {
    [outcome, text] = ["error", `the monitor did not answer: ${err}`];
  }
  entry.outcome = outcome;
  result.dataset.result = outcome;
  result.textContent = text;
  entry.li.dataset.outcome = outcome;
  if (outcome === "error" || outcome === "not-acknowledged") button.disabled = false;
  if (!entry.listed) dropLater(entry);
}

function dropLater(entry) {
  if (entry.dropping) return;
  entry.dropping = setTimeout(() => { entry.li.remove(); held.delete(entry.key); showHeld(); }, KEEP_ANSWERED_MS);
}

function heldItem(check, key) {
  const li = el("li", { "data-gate": check.device_id, "data-request": check.request_id });
  if (check.photo_ref) {
    li.append(el("img", { class: "photo", alt: `photo of ${check.member_name}`,
                          src: `/photos/${encodeURIComponent(park)}/${encodeURIComponent(check.photo_ref)}` }));
  } else {
    li.append(el("div", { class: "no-photo" }, check.personal_hidden ? "photo not shown" : "no photo"));
  }
  li.append(check.personal_hidden
    ? el("span", { class: "hidden-name", title: "this monitor's operator may not see personal data" },
         "name and photo hidden (no personal-data permission)")
    : el("span", { class: "name" }, check.member_name || "(not a member card)"));
  li.append(el("span", { class: "where" }, `gate ${check.device_id} at ${hhmmss(check.at)}` +
                                            (num(check.persons) > 1 ? ` (${num(check.persons)} persons)` : "")));
  const button = el("button", { type: "button", class: "confirm" }, "Confirm");
  li.append(button, el("span", { class: "result", "aria-live": "polite" }));
  const entry = { li, key, listed: true, outcome: undefined };
  button.addEventListener("click", () => confirmCheck(check, entry));
  return entry;
}

function showHeld() {
  $("held").hidden = held.size === 0;
}

function drawHeld(checks) {
  const list = $("held-checks");
  const now = new Set();
  for (const check of checks) {
    const key = `${check.device_id} ${check.request_id}`;
    now.add(key);
    let entry = held.get(key);
    if (!entry) {
      entry = heldItem(check, key);
      held.set(key, entry);
    }
    entry.listed = true;
    list.append(entry.li);  // newest first, as the snapshot lists them
  }
  for (const [key, entry] of held) {
    if (now.has(key)) continue;
    entry.listed = false;
    if (entry.outcome === undefined) {  // settled elsewhere (a checker at the gate, given back): gone
      entry.li.remove();
      held.delete(key);
    } else if (entry.outcome !== "pending") {
      dropLater(entry);  // confirmed here: the answer stays readable a while
    }
  }
  showHeld();
}

function render(snapshot) {
  const capacity = num(snapshot.capacity), inside = num(snapshot.inside);
  $("inside").textContent = String(inside);
  $("capacity").textContent = capacity > 0 ? String(capacity) : "no cap";
  $("occupancy").textContent = capacity > 0 ? `${Math.round((100 * inside) / capacity)} %` : "-";
  $("occupancy-meter").value = capacity > 0 ? Math.min(1, inside / capacity) : 0;
  $("entries").textContent = String(num(snapshot.entries));
  $("exits").textContent = String(num(snapshot.exits));
  $("window-label").textContent = `last ${snapshot.minutes.length} min`;
  $("refusal-total").textContent = String(snapshot.refusals.reduce((s, r) => s + num(r.count), 0));
  const state = $("park-state");
  const word = snapshot.emergency_open ? "emergency" : snapshot.entry_paused ? "paused" : "open";
  state.className = `state ${word}`;
  state.textContent = { emergency: "EMERGENCY OPEN", paused: "ENTRY PAUSED (park full)", open: "Entry open" }[word];
  $("snapshot-at").textContent = hhmmss(snapshot.at);
  drawFlow(snapshot.minutes);
  drawOccupancy(snapshot.minutes, capacity);
  drawGates(snapshot.gates);
  drawAlerts(snapshot.alerts);
  drawHeld(snapshot.held_checks || []);
  drawList("refusals", snapshot.refusals, "none", (r) => {
    const li = el("li", { "data-reason": r.reason });
    li.append(el("span", {}, r.reason), el("b", {}, String(num(r.count))));
    return li;
  });
  drawList("sites", snapshot.sites, "no site edges", (s) =>
    el("li", { class: s.online ? "online" : "offline" },
       `${s.site || s.device_id}: ${s.online ? "online" : "offline"}${s.last_contact ? " (" + hhmmss(s.last_contact) + ")" : ""}`));
  drawList("sales", snapshot.sales_by_window, "no sales yet", (r) => {
    const li = el("li");
    const amount = r.amount ? `${(num(r.amount.minor_units) / 100).toFixed(2)} ${r.amount.currency}` : "";
    li.append(el("span", {}, r.key), el("b", {}, `${num(r.count)} orders ${amount}`));
    return li;
  });
}

function setFeed(status, error) {
  const feed = $("feed-status");
  feed.className = `feed ${status}`;
  feed.textContent = status === "live" ? "live" : status;
  feed.title = error || "";
}

const source = new EventSource(`/events/${encodeURIComponent(park)}`);
source.onmessage = (event) => {
  const message = JSON.parse(event.data);
  setFeed(message.status, message.error);
  if (message.snapshot) render(message.snapshot);
};
source.onerror = () => setFeed("stale", "lost the monitor's event stream; reconnecting");
