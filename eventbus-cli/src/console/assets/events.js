// Events: tail a stream live; find events by event id or correlation id; a correlation id's
// flow, ordered, with its causation links drawn.
"use strict";

EB.pages.events = {
  render(main, [mode, value]) {
    const { h } = EB;
    const tail = tailPane();
    const find = findPane(mode, value);
    main.append(h("h2", {}, "Events"), h("div", { class: "split" }, tail.node, find.node));
    return { poll: tail.poll };
  },
};

function tailPane() {
  const { h } = EB;
  const select = h("select", { id: "tail-stream" });
  const list = h("ol", { id: "tail", class: "events" });
  let key = null;
  let after = null;
  let events = [];
  select.addEventListener("change", () => {
    key = select.value;
    after = null;
    events = [];
    list.replaceChildren();
  });
  return {
    node: h("section", { class: "card grow" }, h("h3", {}, "Tail ", select), list),
    async poll() {
      const streams = (await EB.api("/api/streams")).streams;
      if (select.options.length !== streams.length) {
        EB.fill(select, streams.map((s) => h("option", { value: s.key, selected: s.key === key },
          s.partition === null ? s.stream : `${s.stream} [${s.partition}]`)));
        if (!key && streams.length) key = select.value;
      }
      if (!key) return;
      const query = new URLSearchParams({ stream: key, count: "50" });
      if (after) query.set("after", after);
      const page = await EB.api("/api/events/tail?" + query);
      after = page.last_id || after;
      events = page.entries.reverse().concat(events).slice(0, 200);
      EB.fill(list, events.map((e) => eventItem(e)));
    },
  };
}

function findPane(mode, value) {
  const { h } = EB;
  const by = h("select", { id: "find-by" },
    h("option", { value: "correlation", selected: mode !== "event" }, "correlation id"),
    h("option", { value: "event", selected: mode === "event" }, "event id"));
  const input = h("input", { id: "find-value", placeholder: "id…", value: value || "" });
  const info = h("p", { id: "find-info", class: "muted" });
  const flow = h("div", { id: "flow", class: "flow" });
  let cursor = null;
  let found = [];
  const run = async (more) => {
    if (!more) { cursor = null; found = []; }
    const query = new URLSearchParams(
      by.value === "event" ? { event_id: input.value } : { correlation_id: input.value });
    if (cursor) query.set("cursor", cursor);
    info.textContent = "searching…";
    try {
      const page = await EB.api("/api/events/find?" + query);
      cursor = page.cursor;
      found = found.concat(page.events).sort(byTime);
      info.textContent = `${found.length} events found, ${page.scanned} entries scanned` +
        (cursor ? "; older entries not scanned yet" : "; the whole global stream scanned");
      drawFlow(flow, found);
      more_.hidden = !cursor;
    } catch (e) {
      info.textContent = e.message;
      info.className = "error";
    }
  };
  const more_ = h("button", { type: "button", id: "find-more", hidden: true, onclick: () => run(true) }, "Scan further");
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); run(false); } },
    by, input, h("button", { type: "submit", id: "find-go" }, "Find"));
  if (value) setTimeout(() => run(false), 0);
  return { node: h("section", { class: "card grow" }, h("h3", {}, "Find and follow"), form, info, flow, more_) };
}

function eventItem(e, extra) {
  const { h } = EB;
  if (e.malformed) {
    return h("li", { class: "event malformed" }, h("span", { class: "mono" }, e.stream_id), " malformed: ", e.malformed);
  }
  return h("li", { class: "event", "data-event-id": e.event_id },
    h("div", {}, h("strong", { class: "type" }, e.event_type), " ",
      h("span", { class: "muted" }, `${EB.time(e.timestamp)} from ${e.source}`), extra || null),
    h("div", { class: "muted mono" }, `id ${e.event_id}`,
      e.correlation_id
        ? h("span", {}, " corr ", h("a", { href: "#/events/correlation/" + encodeURIComponent(e.correlation_id) }, e.correlation_id))
        : null),
    h("details", {}, h("summary", {}, "data"), h("pre", {}, EB.json(e.data))));
}

// The flow: events in time order, numbered; each names its cause, and an SVG arrow on the
// left joins cause and effect.
function drawFlow(flow, events) {
  const { h } = EB;
  const index = new Map(events.map((e, i) => [e.event_id, i]));
  const list = h("ol", { class: "events flow-list" }, events.map((e, i) => {
    const cause = e.causation_id && index.has(e.causation_id)
      ? h("span", { class: "cause" }, ` ← caused by #${index.get(e.causation_id) + 1} ${events[index.get(e.causation_id)].event_type}`)
      : e.causation_id ? h("span", { class: "cause muted" }, " ← caused by an event not found") : null;
    const item = eventItem(e, cause);
    item.dataset.n = i + 1;
    return item;
  }));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "links");
  EB.fill(flow, svg, list);
  const items = list.children;
  const top = (i) => items[i].offsetTop + 14;
  svg.setAttribute("height", String(list.offsetHeight));
  events.forEach((e, i) => {
    const from = index.get(e.causation_id);
    if (from === undefined) return;
    const path = document.createElementNS(svg.namespaceURI, "path");
    const [y1, y2] = [top(from), top(i)];
    const bend = 6 + 8 * Math.min(4, Math.abs(i - from));
    path.setAttribute("d", `M 28 ${y1} C ${28 - bend} ${y1}, ${28 - bend} ${y2}, 28 ${y2}`);
    path.setAttribute("class", "link");
    svg.append(path);
  });
}

function byTime(a, b) {
  return a.timestamp - b.timestamp || (a.stream_id < b.stream_id ? -1 : a.stream_id > b.stream_id ? 1 : 0);
}
