//! `eventbus namespace show|set`: turning the global stream off, and what then refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use support::{json_lines, ok, publish, run, Namespace};

#[test]
fn the_global_stream_turns_off_only_when_nobody_reads_it() {
    let ns = Namespace::new("namespace_settings");
    let shown = json_lines(&ok(&run(&ns, &["namespace", "show", "--json"])));
    assert_eq!(shown[0]["global_stream"], true);

    // A group reads the global stream: turning it off would starve it, so it is refused.
    publish(&ns, "Cli.Settings", r#"{"n":1}"#, &[]);
    ok(&run(
        &ns,
        &[
            "consume",
            "--service",
            "audit",
            "--all",
            "--from-beginning",
            "--count",
            "1",
        ],
    ));
    let refused = run(&ns, &["namespace", "set", "--global-stream", "off"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("audit-consumers") && stderr.contains("--force"),
        "{stderr}"
    );
    let shown = json_lines(&ok(&run(&ns, &["namespace", "show", "--json"])));
    assert_eq!(shown[0]["global_stream"], true, "unchanged after a refusal");

    let out = ok(&run(
        &ns,
        &["namespace", "set", "--global-stream", "off", "--force"],
    ));
    assert!(out.contains("global stream off"), "{out}");
    let shown = json_lines(&ok(&run(&ns, &["namespace", "show", "--json"])));
    assert_eq!(shown[0]["global_stream"], false);

    // Now `consume --all` refuses with the reason; a typed consumer still works.
    let all = run(
        &ns,
        &["consume", "--service", "audit2", "--all", "--count", "1"],
    );
    assert_eq!(all.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&all.stderr);
    assert!(
        stderr.contains("does not write the global stream"),
        "{stderr}"
    );
    publish(&ns, "Cli.Settings", r#"{"n":2}"#, &[]);
    let typed = json_lines(&ok(&run(
        &ns,
        &[
            "consume",
            "--service",
            "typed",
            "--type",
            "Cli.Settings",
            "--from-beginning",
            "--count",
            "2",
        ],
    )));
    assert_eq!(typed.len(), 2);

    ok(&run(&ns, &["namespace", "set", "--global-stream", "on"]));
    let shown = json_lines(&ok(&run(&ns, &["namespace", "show", "--json"])));
    assert_eq!(shown[0]["global_stream"], true);
}
