use eventbus_core::{aggregate, command, command_handler, event};

fn up(v: serde_json::Value) -> Result<serde_json::Value, eventbus_core::BoxError> {
    Ok(v)
}

#[event(version = 2, upcasters = [up, up])]
pub struct TooMany;

#[command]
pub struct TwoIds {
    #[aggregate_id]
    a: String,
    #[aggregate_id]
    b: String,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Thing;

#[aggregate(name = "Bad:Name")]
impl Thing {
    #[apply]
    fn wrong(&self, _e: TooMany) {}
}

#[command_handler(aggregate)]
async fn not_on_a_fn(_cmd: TwoIds) -> Result<(), eventbus_core::NoRejection> {
    Ok(())
}

fn main() {}
