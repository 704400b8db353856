//! Being written: see the issue.
fn main() {}
