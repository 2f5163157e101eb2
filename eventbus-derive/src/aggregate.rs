//! Expansion of `#[aggregate]` on an impl block with `#[apply]` methods.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{FnArg, ImplItem, ItemImpl, Type};

use crate::args::{self, Kind};
use crate::check;
use crate::ctxt::Ctxt;

/// Expands `#[aggregate(name = "…", state_version = N, snapshot_every = N)] impl T { … }`.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let mut block: ItemImpl = match syn::parse2(input) {
        Ok(block) => block,
        Err(e) => {
            return syn::Error::new(
                e.span(),
                "`#[aggregate]` goes on an impl block of the aggregate's state type, with \
                 `#[apply]` methods",
            )
            .to_compile_error()
        }
    };
    let values = args::parse(
        &mut cx,
        "aggregate",
        args,
        &[
            ("name", Kind::Str),
            ("state_version", Kind::Int),
            ("snapshot_every", Kind::Int),
        ],
    );
    if let Some((_, path, _)) = &block.trait_ {
        cx.error_spanned_by(path, "`#[aggregate]` goes on an inherent impl block");
    }
    if !block.generics.params.is_empty() {
        cx.error_spanned_by(&block.generics, "an aggregate cannot be generic");
    }
    let self_ty = block.self_ty.clone();
    let default_name = match &*self_ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    let name = args::as_str(&values[0])
        .and_then(|lit| check::type_name(&mut cx, lit, "aggregate"))
        .or(default_name)
        .unwrap_or_default();
    let state_version = args::as_int(&values[1])
        .and_then(|lit| check::version(&mut cx, lit))
        .unwrap_or(1);
    let snapshot_every = match args::as_int(&values[2]).map(|l| l.base10_parse::<u64>()) {
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            cx.push(e);
            0
        }
        None => 0,
    };

    let mut appliers = Vec::new();
    for item in &mut block.items {
        let ImplItem::Fn(f) = item else { continue };
        let before = f.attrs.len();
        f.attrs.retain(|a| !a.path().is_ident("apply"));
        if f.attrs.len() == before {
            continue;
        }
        let sig = &f.sig;
        let mut inputs = sig.inputs.iter();
        let receiver_ok = matches!(inputs.next(),
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_some());
        let event = match (inputs.next(), inputs.next()) {
            (Some(FnArg::Typed(pt)), None) => Some(pt.ty.clone()),
            _ => None,
        };
        match (receiver_ok, event, &sig.asyncness) {
            (true, Some(event), None) => {
                let method = &sig.ident;
                appliers.push(quote! {
                    .on(|state: &mut Self, event: #event| { state.#method(event); })
                });
            }
            _ => cx.error_spanned_by(
                sig,
                "an `#[apply]` method is `fn(&mut self, event: EventType)` (not async: \
                 applying an event only changes the state)",
            ),
        }
    }
    if appliers.is_empty() {
        cx.error_spanned_by(
            &self_ty,
            "an aggregate needs `#[apply]` methods, one per event type it is built from",
        );
    }
    let errors = cx.finish().map(|e| e.to_compile_error());
    quote! {
        #errors
        #block

        const _: () = {
            #[automatically_derived]
            impl ::eventbus_core::es::Aggregate for #self_ty {
                const TYPE: &'static ::core::primitive::str = #name;
                const STATE_VERSION: ::core::primitive::u32 = #state_version;
                const SNAPSHOT_EVERY: ::core::primitive::u64 = #snapshot_every;

                fn apply(
                    &mut self,
                    event: &::eventbus_core::Envelope<::eventbus_core::__private::serde_json::Value>,
                ) -> ::eventbus_core::Result<()> {
                    ::eventbus_core::es::Applier::new(self, event)
                        #(#appliers)*
                        .finish()
                }
            }
        };
    }
}
