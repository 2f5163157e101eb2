use eventbus_core::{command, command_handler, event};

#[event]
pub struct Done;

#[event]
pub struct Other;

#[command(output = Done)]
pub struct DoIt;

// The handler must return the command's declared output.
#[command_handler]
async fn do_it(_cmd: DoIt) -> Result<Other, eventbus_core::NoRejection> {
    Ok(Other)
}

fn main() {}
