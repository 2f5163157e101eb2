//! A `redis-server` of a test's own (ACL users, TLS), on a free port in 23100–23199, stopped
//! by pid when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The next port to try; each test binary walks the range from a different start.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// The first port of the range.
const FIRST_PORT: u16 = 23100;

/// A free port in 23100–23199 (a listener bound and dropped).
pub fn free_port() -> u16 {
    if NEXT_PORT.load(Ordering::SeqCst) == 0 {
        let start = FIRST_PORT + (std::process::id() % 100) as u16;
        let _ = NEXT_PORT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    }
    for _ in 0..100 {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let port = FIRST_PORT + (n - FIRST_PORT) % 100;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 23100–23199");
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cli-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private server: persistence off, `args` added.
pub struct PrivateServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl PrivateServer {
    /// Starts `redis-server --port <port> …args` (the workspace's test server binary,
    /// `eventbus_tests::binaries::server`) and waits until `port_to_wait` accepts
    /// connections.
    pub fn start(port: u16, args: &[&str], port_to_wait: u16) -> Self {
        PrivateServer::start_program(eventbus_tests::binaries::server(), port, args, port_to_wait)
    }

    /// [`start`](Self::start) with the server binary `program` (a TLS server's is
    /// `eventbus_tests::binaries::tls_server`).
    pub fn start_program(
        program: std::ffi::OsString,
        port: u16,
        args: &[&str],
        port_to_wait: u16,
    ) -> Self {
        let dir = TempDir::new("redis");
        let child = Command::new(&program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "these tests run `{}` (on the PATH, or set EVENTBUS_TEST_SERVER): {e}",
                    program.display()
                )
            });
        let server = PrivateServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port_to_wait)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not open port {port_to_wait}",
                program.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
