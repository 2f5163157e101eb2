//! An event-sourced bank account: the aggregate is rebuilt from its own stream, commands are
//! decided on its current state, and concurrent commands on one account are kept
//! consistent by optimistic concurrency (a conflict reloads and decides again).
//!
//! ```text
//! cargo run --example bank_account                # $REDIS_URL, else a local Redis, else in memory
//! cargo run --example bank_account -- --in-memory # in memory even if a Redis answers
//! cargo run --example bank_account -- --keep      # keep the keys, print their namespace
//! ```
//!
//! Every key it writes (event streams, aggregate streams, snapshots) is in its own
//! namespace, deleted at the end (also when it fails) unless `--keep`.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use clap::Parser;
use eventbus_core::es::{EventStore, MemoryEventStore, Repository};
use eventbus_core::transport::memory::MemoryTransport;
use eventbus_core::{
    aggregate, command, command_handler, event, BoxError, CommandBus, CommandError, EventBus,
};
use eventbus_redis::RedisEventStore;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "eventbus event sourcing demo: a bank account under concurrent commands")]
struct Args {
    #[command(flatten)]
    backend: common::Backend,
}

#[event(name = "Bank.AccountOpened")]
#[derive(Debug, Clone)]
struct AccountOpened {
    owner: String,
}

/// Version 1 stored the amount in euros (a float); version 2 stores cents.
fn euros_to_cents(mut v1: Value) -> Result<Value, BoxError> {
    let euros = v1["amount"].as_f64().ok_or("`amount` is not a number")?;
    v1["amount"] = json!((euros * 100.0).round() as i64);
    Ok(v1)
}

#[event(name = "Bank.MoneyDeposited", version = 2, upcasters = [euros_to_cents])]
#[derive(Debug, Clone)]
struct MoneyDeposited {
    amount: i64,
}

#[event(name = "Bank.MoneyWithdrawn")]
#[derive(Debug, Clone)]
struct MoneyWithdrawn {
    amount: i64,
}

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: i64, requested: i64 },
}

#[command(output = AccountOpened, error = AccountError)]
struct OpenAccount {
    #[aggregate_id]
    account: String,
    owner: String,
}

#[command(output = MoneyDeposited, error = AccountError)]
struct Deposit {
    #[aggregate_id]
    account: String,
    amount: i64,
}

#[command(output = MoneyWithdrawn, error = AccountError)]
struct Withdraw {
    #[aggregate_id]
    account: String,
    amount: i64,
}

/// The account's state: only what decisions need.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct BankAccount {
    open: bool,
    balance: i64,
}

#[aggregate(name = "BankAccount", snapshot_every = 20)]
impl BankAccount {
    #[apply]
    fn opened(&mut self, _: AccountOpened) {
        self.open = true;
    }
    #[apply]
    fn deposited(&mut self, e: MoneyDeposited) {
        self.balance += e.amount;
    }
    #[apply]
    fn withdrawn(&mut self, e: MoneyWithdrawn) {
        self.balance -= e.amount;
    }
}

#[command_handler(aggregate)]
impl BankAccount {
    async fn open(&self, cmd: OpenAccount) -> Result<AccountOpened, AccountError> {
        if self.open {
            return Err(AccountError::AlreadyOpen);
        }
        Ok(AccountOpened { owner: cmd.owner })
    }

    async fn deposit(&self, cmd: Deposit) -> Result<MoneyDeposited, AccountError> {
        if !self.open {
            return Err(AccountError::NotOpen);
        }
        Ok(MoneyDeposited { amount: cmd.amount })
    }

    async fn withdraw(&self, cmd: Withdraw) -> Result<MoneyWithdrawn, AccountError> {
        if cmd.amount > self.balance {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: cmd.amount,
            });
        }
        Ok(MoneyWithdrawn { amount: cmd.amount })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let args = Args::parse();
    let scratch = args.backend.connect("bank_account", |c| c).await?;
    println!("backend: {}", scratch.describe());
    let (events, store): (EventBus, Arc<dyn EventStore>) = match scratch.redis() {
        Some(t) => (
            EventBus::new(t.clone(), "bank"),
            Arc::new(RedisEventStore::new(t)),
        ),
        None => {
            let transport = MemoryTransport::new();
            let store = Arc::new(MemoryEventStore::new(transport.clone()));
            (EventBus::new(transport, "bank"), store)
        }
    };
    let accounts = Repository::<BankAccount>::new(store).max_retries(50);
    let bus = CommandBus::new(events).aggregate(accounts.clone());
    let outcome = scratch.until_interrupted(run(&bus, &accounts)).await;
    scratch.finish(outcome).await
}

async fn run(bus: &CommandBus, accounts: &Repository<BankAccount>) -> anyhow::Result<()> {
    let account = "acc-1".to_string();
    bus.dispatch(OpenAccount {
        account: account.clone(),
        owner: "Ada".into(),
    })
    .await?;
    println!("opened {account}");

    // 4 tellers deposit 25 times each on the same account at once.
    let tellers: Vec<_> = (0..4)
        .map(|_| {
            let (bus, account) = (bus.clone(), account.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    bus.dispatch(Deposit {
                        account: account.clone(),
                        amount: 100,
                    })
                    .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for teller in tellers {
        teller.await??;
    }
    let loaded = accounts.load(&account).await?;
    println!(
        "4 tellers x 25 concurrent deposits of 100: balance {} at version {} (none lost: a conflicting append reloads the account and decides again)",
        loaded.state.balance, loaded.version
    );

    match bus
        .dispatch(Withdraw {
            account: account.clone(),
            amount: 1_000_000,
        })
        .await
    {
        Err(CommandError::Rejected(e)) => println!("withdraw 1000000 rejected: {e}"),
        Err(e) => anyhow::bail!("withdrawing 1000000 failed instead of being rejected: {e}"),
        Ok(_) => anyhow::bail!("withdrawing 1000000 was accepted (overdrawn)"),
    }
    bus.dispatch(Withdraw {
        account: account.clone(),
        amount: 2_500,
    })
    .await?;

    let loaded = accounts.load(&account).await?;
    let replayed = accounts.replay(&account).await?;
    let origin = match loaded.from_snapshot {
        Some(version) => format!("loaded from the snapshot at version {version}"),
        None => "replayed from the first event".to_owned(),
    };
    println!(
        "after withdrawing 2500: balance {} at version {} ({origin}; full replay gives {})",
        loaded.state.balance, loaded.version, replayed.state.balance
    );
    Ok(())
}
