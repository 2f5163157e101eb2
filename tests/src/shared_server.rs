//! The Redis every test of a run shares: the one at `REDIS_URL` (or the default address) when
//! it answers, else a throwaway `redis-server` ([`binaries::server`](crate::binaries::server))
//! that the first test process of the run starts and the others reuse.
//!
//! The throwaway server's state lives in `{target}/test-redis/`, guarded by a lock file:
//! `server` holds its port, `pids/` one file per test process (and per `cargo` running it)
//! using it. A watchdog, a `sh` loop in a process group of its own that started the server,
//! checks every second which of those processes are alive and, under the same lock, stops
//! the server once none is: at the end of `cargo test`, whether tests failed or the run was
//! interrupted. Without the server binary the first test process to need it says what to
//! install and exits, so the run fails once.

use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use eventbus_redis::DEFAULT_URL;

/// The ports a throwaway server may take.
const PORTS: std::ops::Range<u16> = 28000..29000;

/// Stops the server (under the lock) once no registered process is alive.
const WATCHDOG: &str = r#"
dir=$1; shift
"$@" &
server=$!
while sleep 1; do
  kill -0 "$server" 2>/dev/null || exit 0
  exec 9>"$dir/lock"
  flock 9
  alive=0
  for f in "$dir"/pids/*; do
    [ -e "$f" ] || continue
    if kill -0 "${f##*/}" 2>/dev/null; then alive=1; else rm -f "$f"; fi
  done
  if [ "$alive" = 0 ]; then
    rm -f "$dir/server"
    kill "$server"
    wait "$server"
    exit 0
  fi
  exec 9>&-
done
"#;

/// The URL of the Redis the tests run against (see the module docs); the first call may
/// start a server, and exits the process if it can't.
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let wanted = std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        if answers(&wanted) {
            return wanted;
        }
        match throwaway() {
            Ok(url) => url,
            Err(reason) => {
                // Written to stderr itself, not through `eprintln!`, which the test harness
                // captures and loses on exit.
                let _ = writeln!(
                    std::io::stderr(),
                    "error: no Redis answers at {wanted} and the tests could not start one: \
                     {reason}. Install redis-server (Debian/Ubuntu: `apt install redis-server`, \
                     macOS: `brew install redis`) or set REDIS_URL to a running Redis."
                );
                std::process::exit(2)
            }
        }
    })
    .clone()
}

/// Whether a Redis at `url` answers `PING`.
fn answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    client
        .get_connection_with_timeout(Duration::from_secs(1))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// Reuses the run's throwaway server or starts it, and registers this process (and the
/// `cargo` running it) as its users.
fn throwaway() -> Result<String, String> {
    let dir = state_dir();
    fs::create_dir_all(dir.join("pids")).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let lock = File::create(dir.join("lock")).map_err(|e| format!("lock file: {e}"))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", dir.display()))?;
    register(&dir, std::process::id());
    if let Some(ppid) = cargo_parent() {
        register(&dir, ppid);
    }
    if let Some(port) = fs::read_to_string(dir.join("server"))
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
    {
        let url = format!("redis://127.0.0.1:{port}");
        if answers(&url) {
            return Ok(url);
        }
    }
    let program = crate::binaries::server();
    let installed = Command::new("sh")
        .args(["-c", "command -v \"$1\"", "installed"])
        .arg(&program)
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return Err(format!("{} is not on the PATH", program.display()));
    }
    let port = PORTS
        .clone()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or("no free port in 28000-28999")?;
    let port_arg = port.to_string();
    let dir_arg = dir.display().to_string();
    let log = dir.join("redis.log").display().to_string();
    Command::new("sh")
        .args(["-c", WATCHDOG, "watchdog", &dir_arg])
        .arg(&program)
        .args(["--port", &port_arg, "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--dir", &dir_arg, "--logfile", &log])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting sh: {e}"))?;
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if answers(&url) {
            fs::write(dir.join("server"), port_arg).map_err(|e| format!("state file: {e}"))?;
            return Ok(url);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{} on port {port} did not come up (see {log})",
        program.display()
    ))
}

/// `{target}/test-redis`: the target directory is the first ancestor of this executable
/// with a `CACHEDIR.TAG`.
fn state_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|p| p.join("CACHEDIR.TAG").exists())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
        .join("test-redis")
}

fn register(dir: &Path, pid: u32) {
    let _ = File::create(dir.join("pids").join(pid.to_string())).and_then(|mut f| f.flush());
}

/// The parent process when it is `cargo`, which keeps the server up between test binaries.
fn cargo_parent() -> Option<u32> {
    let ppid = std::os::unix::process::parent_id();
    let comm = fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
    (comm.trim() == "cargo").then_some(ppid)
}
