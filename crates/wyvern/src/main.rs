//! The `wyvern` command: one binary with a subcommand per role.
fn main() {}
