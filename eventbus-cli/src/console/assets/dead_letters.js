// Dead letters: the groups that have some; a group's letters with payload, error, delivery
// count, origin and time, filtered by type or error text; replay or purge one, a selection
// or all, each after a confirmation that says how many.
"use strict";

EB.pages["dead-letters"] = {
  render(main, [group]) {
    const { h } = EB;
    const groups = h("ul", { id: "dlq-groups", class: "side" });
    main.append(h("h2", {}, "Dead letters"));
    const layout = h("div", { class: "split" }, groups);
    main.append(layout);
    if (!group) {
      const hint = h("p", { class: "muted" }, "Choose a group.");
      layout.append(hint);
      return { poll: () => listGroups(groups, null) };
    }
    const selected = new Set();
    const type = h("input", { id: "dlq-type", placeholder: "event type contains…" });
    const error = h("input", { id: "dlq-error", placeholder: "error contains…" });
    const result = h("p", { id: "dlq-result", class: "muted" });
    const table = h("div", { id: "dlq-letters" });
    const actions = h("div", { class: "actions" });
    const body = h("div", { class: "grow" },
      h("h3", {}, group),
      h("div", { class: "filters" }, type, error), actions, result, table);
    layout.append(body);
    let last = null;
    const act = async (verb, ids) => {
      const n = ids ? ids.length : last.total;
      const what = n === 1 ? "1 dead letter" : `${n} dead letters`;
      const scope = ids ? "" : "all ";
      if (!(await EB.confirm(`${verb[0].toUpperCase() + verb.slice(1)} ${scope}${what} of group ${group}?`))) return;
      try {
        const path = `/api/dead-letters/${encodeURIComponent(group)}/${verb}`;
        const done = await EB.api(path, { ids: ids || null });
        const count = verb === "replay" ? done.replayed : done.purged;
        result.textContent = `${verb === "replay" ? "Replayed" : "Purged"} ${count} of ${n}.`;
        result.className = "ok";
        selected.clear();
      } catch (e) {
        result.textContent = e.message;
        result.className = "error";
      }
    };
    const button = (label, onclick, cls) =>
      h("button", { type: "button", class: cls, onclick, disabled: !EB.writable(),
        title: EB.writable() ? null : "read-only: start the console with --allow-writes" }, label);
    EB.fill(actions,
      button("Replay selected", () => selected.size && act("replay", [...selected]), "sel"),
      button("Purge selected", () => selected.size && act("purge", [...selected]), "sel danger"),
      button("Replay all", () => act("replay", null), "all"),
      button("Purge all", () => act("purge", null), "all danger"));
    const draw = () => {
      if (!last) return;
      const letters = last.letters;
      const rows = letters.map((d) => h("tr", { "data-id": d.id },
        h("td", {}, h("input", { type: "checkbox", class: "pick", checked: selected.has(d.id),
          onchange: (e) => (e.target.checked ? selected.add(d.id) : selected.delete(d.id)) })),
        h("td", { class: "mono" }, d.id),
        h("td", {}, d.event_type || "(undecodable)"),
        h("td", { class: "mono" }, `${d.origin_stream} ${d.origin_id}`),
        h("td", { class: "num" }, String(d.delivery_count)),
        h("td", {}, EB.time(d.dead_lettered_at), h("div", { class: "muted" }, EB.ago(d.dead_lettered_at))),
        h("td", { class: "error-text" }, d.error),
        h("td", {}, h("details", {}, h("summary", {}, short(d.payload)), h("pre", {}, EB.json(d.payload)))),
        h("td", {},
          button("Replay", () => act("replay", [d.id]), "one"),
          button("Purge", () => act("purge", [d.id]), "one danger"))));
      const header = ["", "Id", "Type", "Origin", "Deliveries", "Dead-lettered", "Error", "Payload", ""];
      EB.fill(table, letters.length
        ? h("table", {}, h("thead", {}, h("tr", {}, header.map((c) => h("th", {}, c)))), h("tbody", {}, rows))
        : h("p", { class: "muted" }, last.total ? "No dead letter matches the filter." : "No dead letters."));
    };
    return {
      async poll() {
        await listGroups(groups, group);
        const query = new URLSearchParams({ type: type.value, error: error.value });
        last = await EB.api(`/api/dead-letters/${encodeURIComponent(group)}?${query}`);
        const more = last.more ? ` (the oldest ${last.read} read)` : "";
        table.dataset.total = last.total;
        if (!result.textContent || result.className === "muted") {
          result.textContent = `${last.total} dead letters${more}; ${last.letters.length} shown`;
        }
        draw();
      },
    };
  },
};

async function listGroups(list, active) {
  const { h } = EB;
  const data = await EB.api("/api/dead-letters");
  EB.fill(list, data.groups.length
    ? data.groups.map((g) => h("li", { class: g.group === active ? "active" : "" },
        h("a", { href: "#/dead-letters/" + encodeURIComponent(g.group) }, g.group),
        h("span", { class: "count" }, String(g.count))))
    : h("li", { class: "muted" }, "No group has dead letters."));
}

function short(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 60 ? text.slice(0, 59) + "…" : text;
}
