//! Helpers shared by the macros on types (`#[event]`, `#[command]`, `#[query]`).

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{Attribute, DeriveInput};

/// Whether `attrs` contain a `#[derive(...)]` naming `trait_name` (by any path).
pub(crate) fn derives(attrs: &[Attribute], trait_name: &str) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| {
            let mut found = false;
            let _ = a.parse_nested_meta(|meta| {
                if meta
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == trait_name)
                {
                    found = true;
                }
                Ok(())
            });
            found
        })
}

/// The item with serde's derives added (unless present) and pointed at core's serde.
pub(crate) fn add_serde(item: &DeriveInput) -> TokenStream {
    let mut derive_paths = Vec::new();
    if !derives(&item.attrs, "Serialize") {
        derive_paths.push(quote!(::eventbus_core::__private::serde::Serialize));
    }
    if !derives(&item.attrs, "Deserialize") {
        derive_paths.push(quote!(::eventbus_core::__private::serde::Deserialize));
    }
    let extra = if derive_paths.is_empty() {
        quote!()
    } else {
        quote! {
            #[derive(#(#derive_paths),*)]
            #[serde(crate = "::eventbus_core::__private::serde")]
        }
    };
    let item = item.to_token_stream();
    quote! { #extra #item }
}
