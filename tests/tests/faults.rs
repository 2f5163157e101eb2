//! Fault injection: publishers and consumers of the real `fault-worker` binary against a
//! private `redis-server` (AOF on), with one fault per scenario; then the invariants (see
//! `faults_support::check`): every event published (twice only by a failed publish its
//! publisher retried), every published event handled at least once, no stream entry
//! handled by two live consumers, the projection applied every entry exactly once, dead
//! letters hold exactly the poison, nothing left pending.
//!
//! Each scenario takes 10–20 s; `EVENTBUS_FAULTS_LONG=1 cargo test -p eventbus-tests --test
//! faults -- --nocapture` runs ten times the events with five times the fault window.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod faults_support;

use std::time::Duration;

use faults_support::{run, Fault, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_consumers_and_publishers() {
    // Handlers take 50 ms each, so kills land on handlers in flight.
    let mut scenario = Scenario::new(
        "sigkill",
        Fault::KillProcesses {
            every: Duration::from_millis(700),
        },
    );
    scenario.work = Duration::from_millis(50);
    run(scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stops_abandon_slow_handlers() {
    // Every 4th event takes 900 ms, a stop waits only 300 ms for handlers in flight: what it
    // abandons must not be handled (and logged) by the stopping process after all, since
    // the entry stays pending and its restarted consumer handles it again. Claims after 3 s
    // only, so that no live consumer reclaims a slow handler's entry.
    let mut scenario = Scenario::new(
        "graceful",
        Fault::TerminateConsumers {
            every: Duration::from_millis(800),
        },
    );
    scenario.slow_every = 4;
    scenario.slow = Duration::from_millis(900);
    scenario.shutdown_timeout = Duration::from_millis(300);
    scenario.claim_idle = Duration::from_secs(3);
    run(scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_storm() {
    run(Scenario::new("client-kill", Fault::ClientKillStorm)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart() {
    run(Scenario::new(
        "restart",
        Fault::ServerRestart {
            every: Duration::from_secs(2),
        },
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_timeout_closes_idle_connections() {
    // Publishers pause longer than the timeout, and consumers look for idle entries only
    // every 3 s, so every connection but the blocking reader's sits idle past it.
    let mut scenario = Scenario::new("timeout", Fault::ServerTimeout);
    scenario.claim_interval = Duration::from_secs(3);
    scenario.pause_every = scenario.events / 4;
    scenario.pause = Duration::from_millis(2600);
    run(scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_beyond_claim_idle() {
    // Every 10th event takes 1.6 s; consumers reclaim entries idle for 1 s.
    let mut scenario = Scenario::new("slow", Fault::None);
    scenario.slow_every = 10;
    scenario.slow = Duration::from_millis(1600);
    run(scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_kill_their_consumer() {
    // Handling one aborts the process; consumers restart under their names, and after
    // max_deliveries (3) the poison must be dead-lettered without running the handler.
    let mut scenario = Scenario::new("poison", Fault::None);
    scenario.poison = vec![7, 250, scenario.events - 3];
    scenario.max_deliveries = 3;
    run(scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_noeviction_refuses_writes() {
    // Writes are refused from 1 s to 4 s; consumers are stopped from 0.5 s to 1.2 s, so
    // their handlers and projection meet a backlog while nothing can be written.
    let mut scenario = Scenario::new(
        "maxmemory",
        Fault::MaxMemory {
            hold: Duration::from_secs(3),
        },
    );
    scenario.freeze_consumers = Some((Duration::from_millis(500), Duration::from_millis(1200)));
    run(scenario).await;
}
