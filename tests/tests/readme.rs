//! The README shows `examples/first_service.rs` verbatim (its code blocks are compiled as
//! doctests of eventbus-redis; this keeps the runnable example and the README one program).

#[test]
fn the_first_service_in_the_readme_is_the_example_verbatim() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../../examples/first_service.rs");
    let block = format!("```rust,no_run\n{}```", example);
    assert!(
        readme.contains(&block),
        "README's \"Your first service\" block differs from examples/first_service.rs"
    );
}
