//! An aggregate written with the macros: `#[aggregate]` + `#[apply]`, `#[aggregate_id]`,
//! `#[command_handler(aggregate)]` with and without the context, upcasters on an event.

use eventbus_core::es::{Aggregate, AggregateCommand, AggregateHandlers};
use eventbus_core::{aggregate, command, command_handler, event, BoxError, CommandContext};

fn v1_to_v2(v: serde_json::Value) -> Result<serde_json::Value, BoxError> {
    Ok(v)
}

#[event(name = "Shape.Opened", version = 2, upcasters = [v1_to_v2])]
pub struct Opened {
    pub owner: String,
}

#[event]
pub struct Closed;

#[command(output = Opened)]
pub struct Open {
    #[aggregate_id]
    pub id: u64,
    pub owner: String,
}

#[command(output = Closed)]
pub struct Close(#[aggregate_id] String);

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Thing {
    open: bool,
}

#[aggregate(name = "Thing", snapshot_every = 10, state_version = 2)]
impl Thing {
    #[apply]
    fn opened(&mut self, _e: Opened) {
        self.open = true;
    }
    #[apply]
    fn closed(&mut self, _e: Closed) {
        self.open = false;
    }
    /// Not an applier: left alone.
    pub fn is_open(&self) -> bool {
        self.open
    }
}

#[command_handler(aggregate)]
impl Thing {
    async fn open(&self, cmd: Open, ctx: &CommandContext) -> Result<Opened, eventbus_core::NoRejection> {
        let _ = ctx.command_id();
        Ok(Opened { owner: cmd.owner })
    }
    async fn close(&self, _cmd: Close) -> Result<Closed, eventbus_core::NoRejection> {
        Ok(Closed)
    }
}

fn assert_handlers<T: AggregateHandlers>() {}

fn main() {
    assert_eq!(<Thing as Aggregate>::TYPE, "Thing");
    assert_eq!(<Thing as Aggregate>::STATE_VERSION, 2);
    assert_eq!(<Thing as Aggregate>::SNAPSHOT_EVERY, 10);
    assert_eq!(<Opened as eventbus_core::Event>::UPCASTERS.len(), 1);
    assert_eq!(Open { id: 7, owner: "a".into() }.aggregate_id(), "7");
    assert_eq!(Close("x".into()).aggregate_id(), "x");
    assert!(!Thing::default().is_open());
    assert_handlers::<Thing>();
}
