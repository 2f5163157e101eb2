// Sagas: counts by state, the list by state or searched by id; one saga's data, current
// step and history as a timeline (compensations and timeouts marked).
"use strict";

EB.pages.sagas = {
  render(main, [id]) {
    return id ? detail(main, id) : list(main);
  },
};

function list(main) {
  const { h } = EB;
  let state = "";
  const states = h("div", { id: "saga-states", class: "tabs" });
  const search = h("input", { id: "saga-search", placeholder: "saga id…" });
  const table = h("div", { id: "saga-list" });
  main.append(h("h2", {}, "Sagas"), states, h("div", { class: "filters" }, search), table);
  return {
    async poll() {
      const query = new URLSearchParams({ state, id: search.value });
      const data = await EB.api("/api/sagas?" + query);
      const tab = (name, label, n) => h("button", {
        type: "button", class: state === name ? "active" : "",
        onclick: () => { state = name; EB.current.poll(); },
      }, label, n === undefined ? null : h("span", { class: "count" }, String(n)));
      EB.fill(states, tab("", "all"), Object.entries(data.counts).map(([s, n]) => tab(s, s, n)));
      const rows = data.sagas.map((s) => h("tr", { class: "state-" + s.state, "data-saga": s.saga_id },
        h("td", { class: "mono" }, h("a", { href: "#/sagas/" + encodeURIComponent(s.saga_id) }, s.saga_id)),
        h("td", {}, s.saga_name),
        h("td", {}, h("span", { class: "badge state-" + s.state }, s.state)),
        h("td", {}, s.step),
        h("td", {}, EB.ago(s.started_at)),
        h("td", { class: "error-text" }, s.error || "")));
      EB.fill(table, rows.length
        ? h("table", {}, h("thead", {}, h("tr", {},
            ["Saga", "Name", "State", "Step", "Started", "Error"].map((c) => h("th", {}, c)))),
            h("tbody", {}, rows))
        : h("p", { class: "muted" }, "No sagas."));
    },
  };
}

function detail(main, id) {
  const { h } = EB;
  const head = h("div", { id: "saga-head" });
  const data = h("pre", { id: "saga-data" });
  const timeline = h("ol", { id: "saga-timeline", class: "timeline" });
  main.append(
    h("p", {}, h("a", { href: "#/sagas" }, "← all sagas")),
    head,
    h("div", { class: "split" },
      h("section", { class: "card grow" }, h("h3", {}, "History"), timeline),
      h("section", { class: "card" }, h("h3", {}, "Data"), data)));
  return {
    async poll() {
      const s = await EB.api("/api/sagas/" + encodeURIComponent(id));
      EB.fill(head,
        h("h2", {}, `${s.saga_name} `, h("span", { class: "mono" }, s.saga_id), " ",
          h("span", { class: "badge state-" + s.state }, s.state)),
        h("p", {}, `Current step: ${s.step} · version ${s.version} · started ${EB.time(s.started_at)}`,
          s.completed_at ? ` · finished ${EB.time(s.completed_at)}` : "",
          s.deadline ? ` · reply due ${EB.time(s.deadline)}` : ""),
        s.error ? h("p", { class: "error" }, "Error: " + s.error) : null);
      data.textContent = EB.json(s.data);
      EB.fill(timeline, s.history.map((e) => h("li", { class: "action-" + e.action },
        h("span", { class: "offset mono" }, "+" + (e.timestamp - s.started_at).toFixed(3) + "s"),
        h("span", { class: "step" }, e.step),
        h("span", { class: "action" }, e.action.replace(/_/g, " ")),
        e.error ? h("span", { class: "error-text" }, e.error) : null)));
    },
  };
}
