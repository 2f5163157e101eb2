// Overview: every stream with its length, rate and groups; each group's lag, pending,
// oldest pending age, consumers and dead letters; problem groups highlighted.
"use strict";

EB.pages.overview = {
  render(main) {
    const { h } = EB;
    const summary = h("p", { id: "overview-summary", class: "muted" }, "loading…");
    const list = h("div", { id: "streams" });
    main.append(h("h2", {}, "Streams and consumer groups"), summary, list);
    return {
      async poll() {
        const data = await EB.api("/api/overview");
        const groups = data.streams.reduce((n, s) => n + s.groups.length, 0);
        summary.textContent =
          `${data.streams.length} streams, ${groups} groups, ` +
          `${data.problem_groups} need attention`;
        summary.className = data.problem_groups ? "error" : "muted";
        if (!data.streams.length) {
          EB.fill(list, h("p", { class: "muted" }, "No streams in this namespace yet."));
          return;
        }
        EB.fill(list, data.streams.map(stream));
      },
    };
  },
};

function stream(s) {
  const { h } = EB;
  const name = s.partition === null ? s.stream : `${s.stream} [partition ${s.partition}]`;
  const rate = s.rate_per_s === null ? "–" : s.rate_per_s.toFixed(1) + "/s";
  const rows = s.groups.map(group);
  return h("section", { class: "card stream", "data-stream": s.stream },
    h("h3", {}, name,
      h("span", { class: "facts" },
        h("span", {}, `length ${s.length}`),
        h("span", {}, `rate ${rate}`),
        h("span", { class: "muted" }, `last ${s.last_id}`))),
    rows.length
      ? h("table", { class: "groups" },
          h("thead", {}, h("tr", {},
            ["Group", "Lag", "Pending", "Oldest pending", "Consumers", "Dead letters", "Problems"]
              .map((c) => h("th", {}, c)))),
          h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No consumer groups."));
}

function group(g) {
  const { h } = EB;
  const lag = g.lag === null ? "unknown" : String(g.lag);
  const consumers = g.consumers.length
    ? g.consumers.map((c) =>
        h("div", { class: "consumer" }, c.name,
          h("span", { class: "muted" }, ` ${c.pending} pending, idle ${EB.duration(c.idle_ms)}`)))
    : h("span", { class: "muted" }, "none");
  const dead = g.dead_letters
    ? h("a", { href: "#/dead-letters/" + encodeURIComponent(g.group) }, String(g.dead_letters))
    : "0";
  return h("tr", { class: g.problems.length ? "problem" : "", "data-group": g.group },
    h("td", { class: "group" }, g.group),
    h("td", { class: "num lag" }, lag, g.lag_growing ? h("span", { class: "up", title: "growing" }, " ▲") : null),
    h("td", { class: "num" }, String(g.pending)),
    h("td", { class: "num" }, EB.duration(g.oldest_pending_idle_ms)),
    h("td", {}, consumers),
    h("td", { class: "num" }, dead),
    h("td", { class: "problems" }, g.problems.join(", ")));
}
