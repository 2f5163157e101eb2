//! Expansion of `#[command]` and `#[query]` on types.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput};

use crate::args::{self, Kind};
use crate::check;
use crate::ctxt::Ctxt;
use crate::item::add_serde;

/// Expands `#[command(name = "…", output = T, error = E)] item`.
pub(crate) fn expand_command(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let mut item: DeriveInput = match syn::parse2(input) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    reject_union(&mut cx, &item, "a command");
    let aggregate_id = take_aggregate_id(&mut cx, &mut item);
    let values = args::parse(
        &mut cx,
        "command",
        args,
        &[
            ("name", Kind::Str),
            ("output", Kind::Type),
            ("error", Kind::Type),
        ],
    );
    let name = args::as_str(&values[0])
        .and_then(|lit| check::type_name(&mut cx, lit, "command"))
        .unwrap_or_else(|| item.ident.to_string());
    let output = args::as_type(&values[1]).map_or_else(|| quote!(()), |t| quote!(#t));
    let error = args::as_type(&values[2])
        .map_or_else(|| quote!(::eventbus_core::NoRejection), |t| quote!(#t));
    let errors = cx.finish().map(|e| e.to_compile_error());
    if matches!(item.data, Data::Union(_)) {
        return quote! { #errors #item };
    }
    let with_serde = add_serde(&item);
    let ident = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    quote! {
        #errors
        #with_serde
        const _: () = {
            #[automatically_derived]
            impl #impl_generics ::eventbus_core::Command for #ident #ty_generics #where_clause {
                const COMMAND_TYPE: &'static ::core::primitive::str = #name;
                type Output = #output;
                type Error = #error;
            }
            #aggregate_id
        };
    }
}

/// Removes `#[aggregate_id]` from the command's fields; returns the `AggregateCommand` impl
/// reading that field.
fn take_aggregate_id(cx: &mut Ctxt, item: &mut DeriveInput) -> TokenStream {
    let mut found: Vec<(syn::Member, proc_macro2::Span)> = Vec::new();
    let mut strip = |fields: &mut syn::Fields, in_struct: bool| {
        for (i, field) in fields.iter_mut().enumerate() {
            let before = field.attrs.len();
            let marker = field
                .attrs
                .iter()
                .find(|a| a.path().is_ident("aggregate_id"))
                .cloned();
            field.attrs.retain(|a| !a.path().is_ident("aggregate_id"));
            let Some(marker) = marker else { continue };
            if before - field.attrs.len() > 1 {
                cx.error_spanned_by(&marker, "duplicate `#[aggregate_id]`");
            }
            if !matches!(marker.meta, syn::Meta::Path(_)) {
                cx.error_spanned_by(&marker, "`#[aggregate_id]` takes no arguments");
            }
            if !in_struct {
                cx.error_spanned_by(
                    &marker,
                    "`#[aggregate_id]` goes on a field of a struct command; implement \
                     `eventbus_core::es::AggregateCommand` by hand for an enum",
                );
                continue;
            }
            let member = match &field.ident {
                Some(ident) => syn::Member::Named(ident.clone()),
                None => syn::Member::Unnamed(syn::Index::from(i)),
            };
            found.push((member, syn::spanned::Spanned::span(&marker)));
        }
    };
    match &mut item.data {
        Data::Struct(s) => strip(&mut s.fields, true),
        Data::Enum(e) => e
            .variants
            .iter_mut()
            .for_each(|v| strip(&mut v.fields, false)),
        Data::Union(_) => {}
    }
    if found.len() > 1 {
        cx.push(syn::Error::new(
            found[1].1,
            "a command names one aggregate: only one field can be `#[aggregate_id]`",
        ));
        return quote!();
    }
    let Some((member, _)) = found.pop() else {
        return quote!();
    };
    let ident = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::eventbus_core::es::AggregateCommand for #ident #ty_generics #where_clause {
            fn aggregate_id(&self) -> ::std::string::String {
                ::std::string::ToString::to_string(&self.#member)
            }
        }
    }
}

/// Expands `#[query(name = "…", output = T)] item`.
pub(crate) fn expand_query(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let item: DeriveInput = match syn::parse2(input) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    reject_union(&mut cx, &item, "a query");
    let values = args::parse(
        &mut cx,
        "query",
        args,
        &[("name", Kind::Str), ("output", Kind::Type)],
    );
    let name = args::as_str(&values[0])
        .and_then(|lit| check::type_name(&mut cx, lit, "query"))
        .unwrap_or_else(|| item.ident.to_string());
    let output = match args::as_type(&values[1]) {
        Some(t) => quote!(#t),
        None => {
            if values[1].is_none() {
                cx.error_spanned_by(
                    &item.ident,
                    "a query needs its answer type: `#[query(output = ...)]`",
                );
            }
            quote!(())
        }
    };
    let errors = cx.finish().map(|e| e.to_compile_error());
    let ident = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    quote! {
        #errors
        #item
        const _: () = {
            #[automatically_derived]
            impl #impl_generics ::eventbus_core::Query for #ident #ty_generics #where_clause {
                const QUERY_TYPE: &'static ::core::primitive::str = #name;
                type Output = #output;
            }
        };
    }
}

fn reject_union(cx: &mut Ctxt, item: &DeriveInput, what: &str) {
    if let Data::Union(u) = &item.data {
        cx.error_spanned_by(
            u.union_token,
            format!("{what} must be a struct or an enum, not a union"),
        );
    }
}
