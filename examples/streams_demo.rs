//! Streams demo.

fn main() {}
