//! Expansion of `#[event]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Generics, Ident};

use crate::attr::parse_event_args;
use crate::check;
use crate::ctxt::Ctxt;
use crate::item::add_serde;

/// Expands `#[event(args)] item`.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let item: DeriveInput = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => {
            // Unions are not DeriveInput for us; anything else syn can't read is reported as is.
            return e.to_compile_error();
        }
    };
    if let Data::Union(u) = &item.data {
        cx.error_spanned_by(
            u.union_token,
            "an event must be a struct or an enum, not a union",
        );
    }
    let args = parse_event_args(&mut cx, args);
    let default_name = item.ident.to_string();
    let name = args
        .name
        .as_ref()
        .and_then(|lit| check::event_name(&mut cx, lit))
        .unwrap_or(default_name);
    let version = args
        .version
        .as_ref()
        .and_then(|lit| check::version(&mut cx, lit))
        .unwrap_or(1);

    let upcasters = upcasters(&mut cx, args.upcasters.as_ref(), version);
    let with_serde = add_serde(&item);
    let event_impl = impl_event(&item.ident, &item.generics, &name, version, upcasters);
    let errors = cx.finish().map(|e| e.to_compile_error());
    if matches!(item.data, Data::Union(_)) {
        // Serde can't derive for unions: emit the item untouched, with the error.
        return quote! { #errors #item };
    }
    quote! {
        #errors
        #with_serde
        #event_impl
    }
}

/// `const UPCASTERS: … = &[Upcaster::new(1, f1), …];`, or nothing.
fn upcasters(cx: &mut Ctxt, list: Option<&syn::ExprArray>, version: u32) -> TokenStream {
    let Some(list) = list else {
        return quote!();
    };
    if list.elems.len() >= version as usize {
        cx.error_spanned_by(
            list,
            format!(
                "{} upcasters for version {version}: the n-th upgrades version n to n + 1, so \
                 version {version} has at most {}",
                list.elems.len(),
                version - 1
            ),
        );
        return quote!();
    }
    let steps = list.elems.iter().zip(1u32..).map(|(f, from)| {
        quote! { ::eventbus_core::Upcaster::new(#from, #f) }
    });
    quote! {
        const UPCASTERS: &'static [::eventbus_core::Upcaster] = &[#(#steps),*];
    }
}

/// `impl Event for Type`, inside an anonymous const.
fn impl_event(
    ident: &Ident,
    generics: &Generics,
    name: &str,
    version: u32,
    upcasters: TokenStream,
) -> TokenStream {
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    // A generic event is an event for the parameters that make it serializable.
    let where_clause = if generics.params.is_empty() {
        quote!(#where_clause)
    } else {
        let bounds = quote! {
            Self: ::eventbus_core::__private::serde::Serialize
                + ::eventbus_core::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + ::core::marker::Sync
                + 'static
        };
        match where_clause {
            Some(w) if !w.predicates.is_empty() => {
                let preds = &w.predicates;
                quote!(where #preds, #bounds)
            }
            _ => quote!(where #bounds),
        }
    };
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics ::eventbus_core::Event for #ident #ty_generics #where_clause {
                const EVENT_TYPE: &'static ::core::primitive::str = #name;
                const VERSION: ::core::primitive::u32 = #version;
                #upcasters
            }
        };
    }
}
