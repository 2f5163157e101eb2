use eventbus_core::{command, query};

#[command(outptu = u32)]
pub struct A;

#[command(output = 42)]
pub struct B;

#[command(name = "")]
pub struct C;

#[query]
pub struct NoOutput;

fn main() {}
