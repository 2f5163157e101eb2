use eventbus_core::{command, command_handler, event, CommandContext};

#[event]
pub struct Done;

#[command(output = Done)]
pub struct DoIt;

#[command_handler]
fn not_async(cmd: DoIt) -> Result<Done, eventbus_core::NoRejection> {
    let _ = cmd;
    Ok(Done)
}

#[command_handler]
async fn by_reference(cmd: &DoIt) -> Result<Done, eventbus_core::NoRejection> {
    let _ = cmd;
    Ok(Done)
}

#[command_handler]
async fn no_return(cmd: DoIt, ctx: &CommandContext) {
    let _ = (cmd, ctx);
}

#[command_handler]
async fn wrong_second(cmd: DoIt, extra: u32) -> Result<Done, eventbus_core::NoRejection> {
    let _ = (cmd, extra);
    Ok(Done)
}

#[command_handler]
async fn no_params() -> Result<Done, eventbus_core::NoRejection> {
    Ok(Done)
}

fn main() {}
