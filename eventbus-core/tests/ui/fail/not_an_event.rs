// Using a plain type where an event is expected points at the macro.
pub struct Plain {
    pub n: u32,
}

fn assert_event<E: eventbus_core::Event>() {}

fn main() {
    assert_event::<Plain>();
}
