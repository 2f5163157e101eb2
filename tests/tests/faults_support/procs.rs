//! The worker processes of a scenario: spawned, killed, restarted under the same name, and
//! every lifetime recorded (pid, start, how it ended), so that the checks can tell a live
//! consumer from one that was killed before it acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::ExitStatusExt;

const WORKER: &str = env!("CARGO_BIN_EXE_fault-worker");

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `fault-worker publish`.
    Publisher,
    /// `fault-worker consume`.
    Consumer,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `SIGKILL`ed by the suite.
    Killed,
    /// Died on its own without success (abort on a poison event, a panic, an error).
    Died(String),
    /// Exited 0 (a publisher that published its range, or a consumer after `SIGTERM`).
    Exited,
}

/// One process lifetime.
#[derive(Debug)]
pub struct Life {
    /// Its slot (`c1`, `p0`): consumers restart under their slot's name.
    pub slot: String,
    /// What it is.
    pub role: Role,
    /// Its pid.
    pub pid: u32,
    /// When it started, since the scenario began.
    pub started: Duration,
    /// How it ended (`None`: still running).
    pub end: Option<End>,
    child: Option<Child>,
}

impl Life {
    /// Whether it died without a clean exit: whatever it handled may not have been acked.
    pub fn killed(&self) -> bool {
        matches!(self.end, Some(End::Killed | End::Died(_)))
    }
}

/// A slot: the arguments of its worker, so that it restarts the same way.
struct Slot {
    role: Role,
    args: Vec<String>,
    restarts: u32,
    /// Restart it at this instant (after it died).
    restart_at: Option<Instant>,
    /// A publisher that finished, or a slot given up on.
    retired: bool,
}

/// Every process of a scenario; kills what still runs when dropped.
pub struct Procs {
    began: Instant,
    dir: PathBuf,
    slots: HashMap<String, Slot>,
    order: Vec<String>,
    /// Every lifetime, in start order.
    pub lives: Vec<Life>,
    /// Restarts allowed per slot (a poison loop would restart forever).
    pub max_restarts: u32,
    /// Notes for the report (slots given up on, processes that ignored SIGTERM).
    pub notes: Vec<String>,
}

impl Procs {
    /// An empty set; logs go to `dir`.
    pub fn new(dir: &Path, max_restarts: u32) -> Procs {
        Procs {
            began: Instant::now(),
            dir: dir.to_owned(),
            slots: HashMap::new(),
            order: Vec::new(),
            lives: Vec::new(),
            max_restarts,
            notes: Vec::new(),
        }
    }

    /// Time since the scenario began.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// The handler log of a consumer slot.
    pub fn log_path(&self, slot: &str) -> PathBuf {
        self.dir.join(format!("{slot}.log"))
    }

    /// The stderr of a slot's processes (every lifetime appends to it).
    pub fn stderr_path(&self, slot: &str) -> PathBuf {
        self.dir.join(format!("{slot}.stderr"))
    }

    /// Adds a slot and starts its process.
    pub fn add(&mut self, slot: &str, role: Role, args: Vec<String>) {
        self.slots.insert(
            slot.to_owned(),
            Slot {
                role,
                args,
                restarts: 0,
                restart_at: None,
                retired: false,
            },
        );
        self.order.push(slot.to_owned());
        self.spawn(slot);
    }

    fn spawn(&mut self, slot: &str) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path(slot))
            .expect("open the worker's stderr file");
        let child = Command::new(WORKER)
            .args(&s.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn fault-worker");
        self.lives.push(Life {
            slot: slot.to_owned(),
            role: s.role,
            pid: child.id(),
            started: self.elapsed(),
            end: None,
            child: Some(child),
        });
    }

    /// The running lifetimes of a role.
    pub fn running(&self, role: Role) -> Vec<u32> {
        self.lives
            .iter()
            .filter(|l| l.role == role && l.child.is_some())
            .map(|l| l.pid)
            .collect()
    }

    /// `SIGKILL`s a running process.
    pub fn kill(&mut self, pid: u32) {
        if let Some(life) = self.lives.iter_mut().find(|l| l.pid == pid) {
            if let Some(mut child) = life.child.take() {
                let _ = child.kill();
                let _ = child.wait();
                life.end = Some(End::Killed);
            }
        }
    }

    /// Asks a running process to stop (`SIGTERM`): a graceful shutdown, not a kill.
    pub fn terminate(&self, pid: u32) {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }

    /// Reaps processes that ended and restarts those that died, after `delay`, under the same
    /// slot (a consumer keeps its name, so it recovers what it left pending). A publisher
    /// that exited 0 is done; a slot past `max_restarts` is given up on.
    pub fn supervise(&mut self, restart: bool, delay: Duration) {
        let now = Instant::now();
        for life in &mut self.lives {
            let Some(child) = life.child.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            life.child = None;
            life.end = Some(ending(status));
            if let Some(slot) = self.slots.get_mut(&life.slot) {
                if life.end == Some(End::Exited) && slot.role == Role::Publisher {
                    slot.retired = true;
                }
            }
        }
        // Killed by us: restart as well.
        for (name, slot) in &mut self.slots {
            let running = self
                .lives
                .iter()
                .any(|l| &l.slot == name && l.child.is_some());
            if running || slot.retired || slot.restart_at.is_some() || !restart {
                continue;
            }
            slot.restart_at = Some(now + delay);
        }
        let due: Vec<String> = self
            .order
            .iter()
            .filter(|n| {
                self.slots
                    .get(*n)
                    .and_then(|s| s.restart_at)
                    .is_some_and(|t| t <= now)
            })
            .cloned()
            .collect();
        for name in due {
            let max = self.max_restarts;
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            slot.restart_at = None;
            if slot.retired {
                continue;
            }
            if slot.restarts >= max {
                slot.retired = true;
                self.notes.push(format!(
                    "slot {name} gave up after {max} restarts (it kept dying)"
                ));
                continue;
            }
            slot.restarts += 1;
            self.spawn(&name);
        }
    }

    /// Whether every publisher slot finished (exited 0).
    pub fn publishers_done(&self) -> bool {
        self.slots
            .values()
            .filter(|s| s.role == Role::Publisher)
            .all(|s| s.retired)
            && self.running(Role::Publisher).is_empty()
    }

    /// Restarts per slot.
    pub fn restarts(&self) -> Vec<(String, u32)> {
        self.order
            .iter()
            .filter_map(|n| self.slots.get(n).map(|s| (n.clone(), s.restarts)))
            .collect()
    }

    /// Stops every consumer with `SIGTERM` (graceful shutdown), waiting up to `limit`; one
    /// still running then is `SIGKILL`ed (and counts as killed).
    pub async fn stop_consumers(&mut self, limit: Duration) {
        for slot in self.slots.values_mut() {
            slot.retired = true;
            slot.restart_at = None;
        }
        for pid in self.running(Role::Consumer) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !self.running(Role::Consumer).is_empty() {
            self.supervise(false, Duration::ZERO);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for pid in self.running(Role::Consumer) {
            self.notes.push(format!(
                "consumer pid {pid} ignored SIGTERM for {limit:?} and was killed"
            ));
            self.kill(pid);
        }
    }

    /// The lifetime of a pid.
    pub fn life(&self, pid: u32) -> Option<&Life> {
        self.lives.iter().find(|l| l.pid == pid)
    }
}

fn ending(status: ExitStatus) -> End {
    if status.success() {
        End::Exited
    } else if let Some(signal) = status.signal() {
        End::Died(format!("signal {signal}"))
    } else {
        End::Died(format!("exit code {:?}", status.code()))
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for life in &mut self.lives {
            if let Some(mut child) = life.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
