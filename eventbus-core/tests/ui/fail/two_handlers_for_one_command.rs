use eventbus_core::{command, command_handler, event};

#[event]
pub struct Done;

#[command(output = Done)]
pub struct DoIt;

pub struct Service;

#[command_handler]
impl Service {
    async fn first(&self, _cmd: DoIt) -> Result<Done, eventbus_core::NoRejection> {
        Ok(Done)
    }

    async fn second(&self, _cmd: DoIt) -> Result<Done, eventbus_core::NoRejection> {
        Ok(Done)
    }
}

fn main() {}
