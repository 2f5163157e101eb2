//! Expansion of `#[route]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Item, ItemFn};

use crate::attr::parse_route_args;
use crate::check;
use crate::ctxt::Ctxt;

/// Expands `#[route(args)] async fn name(...) { ... }` into a unit struct `name` whose
/// `IntoRule` impl holds the function and builds its rule.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let args = parse_route_args(&mut cx, args);
    let func: ItemFn = match syn::parse2::<Item>(input.clone()) {
        Ok(Item::Fn(func)) => func,
        Ok(other) => {
            cx.error_spanned_by(&other, "`#[route]` applies to an async fn");
            let errors = cx.finish().map(|e| e.to_compile_error());
            return quote! { #errors #other };
        }
        Err(e) => return e.to_compile_error(),
    };
    if func.sig.asyncness.is_none() {
        cx.error_spanned_by(func.sig.fn_token, "`#[route]` applies to an async fn");
    }
    if let Some(receiver) = func.sig.receiver() {
        cx.error_spanned_by(receiver, "a route handler can't take `self`");
    }
    if !func.sig.generics.params.is_empty() {
        cx.error_spanned_by(&func.sig.generics, "a route handler can't be generic");
    }
    let pattern = match &args.pattern {
        Some(lit) => check::pattern(&mut cx, lit),
        None => {
            cx.push(syn::Error::new(
                Span::call_site(),
                "expected a pattern first: `#[route(\"Order.*\")]`",
            ));
            None
        }
    };
    let priority = args
        .priority
        .as_ref()
        .and_then(|expr| check::priority(&mut cx, expr));

    let ident = &func.sig.ident;
    let vis = &func.vis;
    let doc_attrs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let rule_name = args
        .name
        .as_ref()
        .map_or_else(|| ident.to_string(), syn::LitStr::value);
    let unit = quote! {
        #(#doc_attrs)*
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #ident;
    };
    let body = match (cx.finish(), pattern) {
        (None, Some(pattern)) => {
            let priority = priority.unwrap_or(0);
            let filter = args.filter.as_ref().map(|f| quote! { .filter(#f) });
            quote! {
                #func
                ::eventbus_core::IntoRule::into_rule(
                    ::eventbus_core::Rule::new(#pattern, #ident)?
                        .priority(#priority)
                        #filter
                        .name(#rule_name),
                )
            }
        }
        // Fallback: the struct, its impl and the function still exist, so neither uses of
        // the rule nor the function's imports cascade into more diagnostics.
        (errors, _) => {
            let errors = errors.map(|e| e.to_compile_error());
            quote! {
                #errors
                #func
                let _ = #ident;
                ::core::unimplemented!("invalid #[route]")
            }
        }
    };
    quote! {
        #unit
        const _: () = {
            #[automatically_derived]
            impl ::eventbus_core::IntoRule for #ident {
                fn into_rule(
                    self,
                ) -> ::core::result::Result<::eventbus_core::CompiledRule, ::eventbus_core::Error> {
                    #body
                }
            }
        };
    }
}
