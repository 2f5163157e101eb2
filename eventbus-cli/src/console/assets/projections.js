// Projections: each one's position against its streams' heads, its lease holder, its
// rebuild status, and a rebuild asked of its active instance (confirmed).
"use strict";

EB.pages.projections = {
  render(main) {
    const { h } = EB;
    const list = h("div", { id: "projections" });
    main.append(h("h2", {}, "Projections"), list);
    return {
      async poll() {
        const data = await EB.api("/api/projections");
        EB.fill(list, data.projections.length
          ? data.projections.map(projection)
          : h("p", { class: "muted" }, "No projection groups in this namespace."));
      },
    };
  },
};

function projection(p) {
  const { h } = EB;
  const behind = p.positions.some((x) => x.lag !== 0);
  const rebuild = p.rebuild;
  const rebuildText = {
    running: `rebuilding: ${rebuild.remaining === null ? "unknown" : rebuild.remaining} entries to go`,
    unfinished: "a rebuild stopped before switching over",
    done: "rebuilt",
    never: "never rebuilt",
  }[rebuild.status];
  const row = (x) => h("tr", {},
    h("td", {}, x.partition === null ? x.stream : `${x.stream} [${x.partition}]`),
    h("td", {}, x.group),
    h("td", { class: "num" }, x.lag === null ? "unknown" : String(x.lag)),
    h("td", { class: "num" }, String(x.pending)),
    h("td", { class: "mono" }, x.head || "-"),
    h("td", { class: "num" }, x.length === null ? "-" : String(x.length)));
  return h("section", { class: "card" + (behind ? " problem" : ""), "data-projection": p.name },
    h("h3", {}, p.name,
      h("span", { class: "facts" },
        h("span", {}, p.lease_holder ? "active: " + p.lease_holder.split(":")[0] : "no active instance"),
        h("span", { class: "badge rebuild-" + rebuild.status }, rebuildText))),
    h("table", {},
      h("thead", {}, h("tr", {}, ["Stream", "Group", "Behind", "Pending", "Head", "Length"].map((c) => h("th", {}, c)))),
      h("tbody", {}, p.positions.map(row), rebuild.positions.map(row))),
    h("div", { class: "actions" },
      h("button", {
        type: "button", class: "rebuild", disabled: !EB.writable() || rebuild.requested_at !== null,
        title: EB.writable() ? null : "read-only: start the console with --allow-writes",
        onclick: () => askRebuild(p.name),
      }, "Rebuild"),
      rebuild.requested_at !== null
        ? h("span", { class: "requested" }, `rebuild requested ${EB.ago(rebuild.requested_at)}; ` +
            (p.lease_holder ? "waiting for the active instance to take it" : "no instance is active to take it"))
        : null));
}

async function askRebuild(name) {
  const question = `Rebuild projection ${name} from the start of its streams? ` +
    "Its active instance replays them into shadow keys and switches readers over once caught up.";
  if (!(await EB.confirm(question))) return;
  try {
    await EB.api(`/api/projections/${encodeURIComponent(name)}/rebuild`, {});
    EB.status(`rebuild of ${name} requested`);
  } catch (e) {
    EB.status(e.message, true);
  }
}
