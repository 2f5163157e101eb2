use eventbus_core::event;

#[event]
pub union Bits {
    pub int: u32,
    pub float: f32,
}

fn main() {}
