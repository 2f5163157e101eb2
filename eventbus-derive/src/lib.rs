//! Procedural macros for eventbus. Use them through `eventbus_core`, which re-exports them.

use proc_macro::TokenStream;

/// Makes a struct or enum an event (see `eventbus_core::Event`).
#[proc_macro_attribute]
pub fn event(_args: TokenStream, input: TokenStream) -> TokenStream {
    input
}
