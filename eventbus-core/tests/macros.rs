//! Compile-pass and compile-fail tests of the macros: every diagnostic is locked by a
//! `fail/*.rs` + `.stderr` pair.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
