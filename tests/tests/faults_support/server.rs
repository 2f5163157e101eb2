//! A private `redis-server` with AOF on (`appendfsync always`), on a port in 27300–27399,
//! that can be killed and restarted on the same port and data directory, and dies (by pid)
//! when dropped, even when the test panics. The range is shared with other private servers
//! on the machine (other checkouts run this suite too), so a port is taken only once the
//! server answering on it reports our child's pid.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Ports handed out so far by this test process (tests run in parallel).
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// The private server.
pub struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Server {
    /// Starts a server on the first free port of 27300–27399 (after those this process used).
    pub async fn start() -> Server {
        let dir =
            std::env::temp_dir().join(format!("faults-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        for _ in 0..100 {
            let offset = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % 100;
            let port = 27300 + offset;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let mut server = Server {
                child: None,
                port,
                dir: dir.clone(),
            };
            if server.spawn().await {
                return server;
            }
        }
        panic!("no free port in 27300–27399 for a private redis-server");
    }

    async fn spawn(&mut self) -> bool {
        let program = eventbus_tests::binaries::server();
        let child = Command::new(&program)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the fault suite runs `{}` (on the PATH, or set EVENTBUS_TEST_SERVER): {e}",
                    program.display()
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            // Another process's server on the port would answer too: check it is ours.
            let pid = self.child.as_ref().map(Child::id);
            if pid.is_some() && server_pid(&self.url()).await == pid {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    /// `SIGKILL`s the server (acknowledged writes are in the AOF: `appendfsync always`).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory, loading the AOF.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..40 {
            if self.spawn().await {
                return;
            }
            // The port may linger for a moment after the kill.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `process_id` from `INFO server`: which process answers on the URL.
async fn server_pid(url: &str) -> Option<u32> {
    let info = command(url, &["INFO", "server"]).await.ok()?;
    let text: String = redis::from_redis_value(info).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs one command on a fresh connection (chaos must not depend on a connection it kills).
pub async fn command(url: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::other("connect timed out")))??;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    tokio::time::timeout(Duration::from_secs(2), cmd.query_async(&mut conn))
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::other("command timed out")))?
}

/// `used_memory` from `INFO memory`.
pub async fn used_memory(url: &str) -> Option<u64> {
    let info = command(url, &["INFO", "memory"]).await.ok()?;
    let text: String = redis::from_redis_value(info).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

/// How many commands the server refused with `OOM` (`INFO errorstats`).
pub async fn oom_errors(url: &str) -> Option<u64> {
    let info = command(url, &["INFO", "errorstats"]).await.ok()?;
    let text: String = redis::from_redis_value(info).ok()?;
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix("errorstat_OOM:count="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    )
}
