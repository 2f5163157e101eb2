//! The layering rules, checked on the sources: no module of a crate imports one that imports
//! it back (directly or around a loop), and `eventbus-core` sends no Redis commands.
//!
//! A module is a file (`bus/options.rs` is `bus::options`, `bus/mod.rs` is `bus`); it
//! depends on the modules its code names by `crate::…` paths, outside comments and
//! `#[cfg(test)]` code. A module naming its own ancestor or descendant doesn't count: a
//! parent declares and re-exports its children, and children use what their parent shares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {dir:?}: {e}"));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file (`bus/consumer/mod.rs` → `bus::consumer`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("a file below src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its tests and comments.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {file:?}: {e}"));
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    before_tests
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each module of the crate at `src` with the modules it depends on.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let related = |a: &str, b: &str| {
        a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
    };
    let mut graph = BTreeMap::new();
    for (name, file) in &modules {
        let code = code(file);
        let mut deps = BTreeSet::new();
        for path in code.split("crate::").skip(1) {
            let segments: Vec<&str> = path
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .collect();
            // The longest prefix of the path that is a module.
            let target = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|m| modules.contains_key(m));
            if let Some(target) = target.filter(|t| !related(name, t)) {
                deps.insert(target);
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// The groups of modules that reach each other (strongly connected, more than one module).
fn loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for d in graph.get(&m).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (m, from_m) in &reached {
        if !from_m.contains(*m) || found.iter().any(|g| g.contains(*m)) {
            continue;
        }
        let group: BTreeSet<String> = from_m
            .iter()
            .filter(|other| reached.get(other).is_some_and(|r| r.contains(*m)))
            .cloned()
            .collect();
        found.push(group);
    }
    found
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    for krate in ["eventbus-core", "eventbus-redis"] {
        let graph = dependencies(&workspace().join(krate).join("src"));
        assert!(
            graph.len() > 10,
            "{krate}: too few modules found: {graph:?}"
        );
        let loops = loops(&graph);
        assert!(
            loops.is_empty(),
            "{krate}: modules that import each other: {loops:?}"
        );
    }
}

#[test]
fn core_sends_no_redis_commands() {
    const COMMANDS: &[&str] = &[
        "XADD",
        "XREADGROUP",
        "XACK",
        "XCLAIM",
        "XAUTOCLAIM",
        "XPENDING",
        "XGROUP",
        "XINFO",
        "XRANGE",
        "XLEN",
        "XTRIM",
        "HSET",
        "HGETALL",
        "HINCRBY",
        "HINCRBYFLOAT",
        "HDEL",
        "DEL",
        "LPUSH",
        "RPUSH",
        "LTRIM",
        "LREM",
        "LRANGE",
        "SADD",
        "SREM",
        "SMEMBERS",
        "INCRBY",
        "EVALSHA",
        "PUBLISH",
        "SUBSCRIBE",
        "SCAN",
        "PEXPIRE",
    ];
    let src = workspace().join("eventbus-core").join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let code = code(file);
        for command in COMMANDS {
            if code.contains(&format!("\"{command}\"")) || code.contains(&format!("\"{command} ")) {
                found.push(format!("{}: {command}", module_of(&src, file)));
            }
        }
    }
    assert!(
        found.is_empty(),
        "Redis commands in eventbus-core: {found:?}"
    );
}

/// The checks catch what they look for.
#[test]
fn a_loop_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_owned(), deps.into_iter().map(str::to_owned).collect()))
    .collect();
    let expected: BTreeSet<String> = ["a", "b", "c"].map(str::to_owned).into();
    assert_eq!(loops(&graph), vec![expected]);
}
