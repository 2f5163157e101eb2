//! Shared helpers of the CLI tests: the `eventbus` binary, the server at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`) and one key namespace per test, deleted when the test ends — also
//! when it fails (the workspace's `eventbus-tests` guard deletes `{namespace}:*` on drop) —
//! and private servers ([`server`]) for ACL users and TLS.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod server;

use eventbus_tests::NamespaceGuard;
pub use eventbus_tests::{raw_connection, redis_url};

/// The `eventbus` binary of this crate.
pub const BIN: &str = env!("CARGO_BIN_EXE_eventbus");

/// A test's key namespace `test:cli:{test}:{suffix}`: deletes every key under it, and the
/// keys given to [`also`](Self::also), when dropped, whether the test passed or panicked.
/// Derefs to the namespace string.
#[derive(Debug)]
pub struct Namespace(NamespaceGuard);

impl Namespace {
    /// A fresh namespace for `test`.
    pub fn new(test: &str) -> Self {
        Namespace(NamespaceGuard::new(eventbus_tests::namespace(&format!(
            "cli:{test}"
        ))))
    }

    /// Deletes `key` too (a key outside the namespace, such as a saga's `saga:{id}`).
    pub fn also(&self, key: impl Into<String>) {
        self.0.also(key);
    }
}

impl std::ops::Deref for Namespace {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.namespace()
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.namespace())
    }
}
