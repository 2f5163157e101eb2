//! The `eventbus` command-line tool.

fn main() {}
