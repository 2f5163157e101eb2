//! Expansion of `#[command_handler]` and `#[query_handler]` on async fns and impl blocks.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, Item, ItemFn, ItemImpl, Pat, ReturnType, Signature, Type};

use crate::ctxt::Ctxt;

/// Which bus a handler belongs to.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Bus {
    Command,
    Query,
}

impl Bus {
    fn macro_name(self) -> &'static str {
        match self {
            Bus::Command => "command_handler",
            Bus::Query => "query_handler",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Bus::Command => "command",
            Bus::Query => "query",
        }
    }

    fn context_name(self) -> &'static str {
        match self {
            Bus::Command => "CommandContext",
            Bus::Query => "QueryContext",
        }
    }
}

/// The parts of a handler's signature the expansion needs.
struct Parsed {
    /// The message type (first non-receiver parameter).
    message: Type,
    /// How the second parameter is supplied: none, the context, or a resource `&T`.
    extra: Extra,
    /// The span of the return type, for type errors.
    ret_span: Span,
}

enum Extra {
    None,
    Context,
    Resource(Box<Type>),
}

/// Expands `#[command_handler]` / `#[query_handler]`.
pub(crate) fn expand(bus: Bus, args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let aggregate = bus == Bus::Command
        && syn::parse2::<syn::Ident>(args.clone()).is_ok_and(|i| i == "aggregate");
    if !args.is_empty() && !aggregate {
        let expected = match bus {
            Bus::Command => "takes no arguments, or `aggregate` on an aggregate's impl block",
            Bus::Query => "takes no arguments",
        };
        cx.error_spanned_by(&args, format!("`#[{}]` {expected}", bus.macro_name()));
    }
    let item: Item = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let out = match item {
        Item::Fn(f) if aggregate => {
            cx.error_spanned_by(
                f.sig.fn_token,
                "`#[command_handler(aggregate)]` goes on the aggregate's impl block, whose \
                 methods take `&self` (the current state); a plain fn is registered with \
                 `CommandBus::handle_aggregate`",
            );
            quote!(#f)
        }
        Item::Fn(f) => expand_fn(&mut cx, bus, f),
        Item::Impl(i) if aggregate => expand_impl(&mut cx, bus, i, true),
        Item::Impl(i) => expand_impl(&mut cx, bus, i, false),
        other => {
            cx.error_spanned_by(
                &other,
                format!(
                    "`#[{}]` goes on an async fn or on an impl block",
                    bus.macro_name()
                ),
            );
            quote!(#other)
        }
    };
    let errors = cx.finish().map(|e| e.to_compile_error());
    quote! { #errors #out }
}

/// Checks what every handler is: an `async fn`, not generic. Reports each breach.
fn async_and_not_generic(cx: &mut Ctxt, bus: Bus, sig: &Signature) -> bool {
    let mut ok = true;
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            format!("a {} handler must be an `async fn`", bus.what()),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!("a {} handler cannot be generic", bus.what()),
        );
        ok = false;
    }
    ok
}

/// Checks a handler signature: async, `(message)` or `(message, &Extra)`, a return type.
fn parse_signature(cx: &mut Ctxt, bus: Bus, sig: &Signature, method: bool) -> Option<Parsed> {
    let mut ok = async_and_not_generic(cx, bus, sig);
    let mut inputs = sig.inputs.iter().peekable();
    if method {
        match inputs.next() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
            Some(other) => {
                cx.error_spanned_by(
                    other,
                    format!("a {} handler method takes `&self`", bus.what()),
                );
                ok = false;
            }
            None => {
                cx.error_spanned_by(
                    &sig.ident,
                    format!("a {} handler method takes `&self`", bus.what()),
                );
                ok = false;
            }
        }
    }
    let params: Vec<&FnArg> = inputs.collect();
    let shape = format!(
        "expected `({what}: {What}Type)` or `({what}: {What}Type, ctx: &{ctx})`",
        what = bus.what(),
        What = if bus == Bus::Command {
            "Command"
        } else {
            "Query"
        },
        ctx = bus.context_name()
    );
    let message = match params.first().and_then(|a| typed(a)) {
        Some(pt) if !matches!(*pt.ty, Type::Reference(_)) => Some((*pt.ty).clone()),
        Some(pt) => {
            cx.error_spanned_by(
                &pt.ty,
                format!("the {} is taken by value, not by reference", bus.what()),
            );
            None
        }
        None => {
            let at: TokenStream = if sig.inputs.is_empty() {
                quote!(#sig)
            } else {
                quote_spanned!(sig.inputs.span() => ())
            };
            cx.error_spanned_by(at, &shape);
            None
        }
    };
    let extra = match params.get(1).and_then(|a| typed(a)) {
        None => Extra::None,
        Some(pt) => match &*pt.ty {
            Type::Reference(r) if r.mutability.is_none() => {
                let is_context = matches!(&*r.elem, Type::Path(p)
                    if p.path.segments.last().is_some_and(|s| s.ident == bus.context_name()));
                if is_context {
                    Extra::Context
                } else if bus == Bus::Query {
                    Extra::Resource(r.elem.clone())
                } else {
                    cx.error_spanned_by(&pt.ty, &shape);
                    ok = false;
                    Extra::None
                }
            }
            other => {
                cx.error_spanned_by(other, &shape);
                ok = false;
                Extra::None
            }
        },
    };
    if let Some(extra_arg) = params.get(2) {
        cx.error_spanned_by(extra_arg, &shape);
        ok = false;
    }
    for arg in &params {
        if let FnArg::Typed(pt) = arg {
            if !matches!(*pt.pat, Pat::Ident(_) | Pat::Wild(_)) {
                cx.error_spanned_by(&pt.pat, "use a plain name for handler parameters");
                ok = false;
            }
        }
    }
    let ret_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => {
            cx.error_spanned_by(
                sig,
                format!("a {} handler returns `Result<Output, Error>`", bus.what()),
            );
            ok = false;
            Span::call_site()
        }
    };
    let message = message?;
    ok.then_some(Parsed {
        message,
        extra,
        ret_span,
    })
}

fn typed(arg: &FnArg) -> Option<&syn::PatType> {
    match arg {
        FnArg::Typed(pt) => Some(pt),
        FnArg::Receiver(_) => None,
    }
}

/// The registration of one handler method of an impl block: a closure taking the message
/// and the extractors the method's second parameter needs, calling the method on the
/// shared instance.
fn method_registration(bus: Bus, parsed: &Parsed, method: &syn::Ident) -> TokenStream {
    let message = &parsed.message;
    let span = parsed.ret_span;
    let context = match bus {
        Bus::Command => quote!(::eventbus_core::CommandContext),
        Bus::Query => quote!(::eventbus_core::QueryContext),
    };
    let (extra, args) = match &parsed.extra {
        Extra::None => (quote!(), quote!(message)),
        Extra::Context => (quote!(, ctx: #context), quote!(message, &ctx)),
        Extra::Resource(ty) => (
            quote!(, resource: ::eventbus_core::State<#ty>),
            quote!(message, &*resource),
        ),
    };
    // The typed `let` makes a wrong return type an error at the user's return type.
    let call = match bus {
        Bus::Command => quote_spanned! {span=>
            let output: ::core::result::Result<
                <#message as ::eventbus_core::Command>::Output,
                <#message as ::eventbus_core::Command>::Error,
            > = this.#method(#args).await;
            output
        },
        Bus::Query => quote_spanned! {span=>
            this.#method(#args)
                .await
                .map_err(|e| ::eventbus_core::QueryError::Failed(::core::convert::Into::into(e)))
        },
    };
    quote! {
        let bus = {
            let this = ::std::sync::Arc::clone(&self);
            bus.handle(move |message: #message #extra| {
                let this = ::std::sync::Arc::clone(&this);
                async move { #call }
            })
        };
    }
}

/// An async fn stays the fn it is (callable as a plain fn in tests); the expansion checks
/// its shape, then asserts it is a handler of its bus, so a mistake is reported at the fn.
fn expand_fn(cx: &mut Ctxt, bus: Bus, f: ItemFn) -> TokenStream {
    if !check_fn(cx, bus, &f.sig) {
        return quote!(#f);
    }
    let name = &f.sig.ident;
    let (context, message_trait) = match bus {
        Bus::Command => (
            quote!(::eventbus_core::CommandContext),
            quote!(::eventbus_core::Command),
        ),
        Bus::Query => (
            quote!(::eventbus_core::QueryContext),
            quote!(::eventbus_core::Query),
        ),
    };
    let span = match &f.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => f.sig.ident.span(),
    };
    let check = quote_spanned! {span=>
        #[allow(dead_code)]
        const _: () = {
            fn assert_handler<H, A>(_: H)
            where
                H: ::eventbus_core::Handler<#context, A>,
                <H as ::eventbus_core::Handler<#context, A>>::Message: #message_trait,
            {
            }
            fn check() {
                assert_handler(#name);
            }
        };
    };
    quote! {
        #f
        #check
    }
}

/// Checks a handler fn: async, not generic, the message by value, then extractors by
/// value, and a return type.
fn check_fn(cx: &mut Ctxt, bus: Bus, sig: &Signature) -> bool {
    let mut ok = async_and_not_generic(cx, bus, sig);
    let mut params = sig.inputs.iter();
    match params.next() {
        Some(FnArg::Typed(pt)) if matches!(*pt.ty, Type::Reference(_)) => {
            cx.error_spanned_by(
                &pt.ty,
                format!("the {} is taken by value, not by reference", bus.what()),
            );
            ok = false;
        }
        Some(FnArg::Typed(_)) => {}
        Some(receiver @ FnArg::Receiver(_)) => {
            cx.error_spanned_by(
                receiver,
                format!(
                    "a method handler goes in an impl block under `#[{}]`",
                    bus.macro_name()
                ),
            );
            ok = false;
        }
        None => {
            cx.error_spanned_by(
                quote!(#sig),
                format!(
                    "a {what} handler takes the {what} first: `({what}: {What}Type, ...)`",
                    what = bus.what(),
                    What = if bus == Bus::Command {
                        "Command"
                    } else {
                        "Query"
                    },
                ),
            );
            ok = false;
        }
    }
    for arg in params {
        let FnArg::Typed(pt) = arg else { continue };
        if let Type::Reference(r) = &*pt.ty {
            let inner = &r.elem;
            let hint = match &**inner {
                Type::Path(p)
                    if p.path
                        .segments
                        .last()
                        .is_some_and(|s| s.ident == bus.context_name()) =>
                {
                    format!("`{}`", bus.context_name())
                }
                other => format!("`State<{}>`", quote!(#other).to_string().replace(' ', "")),
            };
            cx.error_spanned_by(
                &pt.ty,
                format!("handler arguments are extractors taken by value, like axum's: use {hint}"),
            );
            ok = false;
        }
    }
    for arg in &sig.inputs {
        if let FnArg::Typed(pt) = arg {
            if !matches!(*pt.pat, Pat::Ident(_) | Pat::Wild(_)) {
                cx.error_spanned_by(&pt.pat, "use a plain name for handler parameters");
                ok = false;
            }
        }
    }
    if matches!(sig.output, ReturnType::Default) {
        cx.error_spanned_by(
            sig,
            format!("a {} handler returns `Result<Output, Error>`", bus.what()),
        );
        ok = false;
    }
    ok
}

/// Every async method of the impl block handling a message becomes a handler; the type gets
/// `CommandHandlers`/`QueryHandlers` to register them all: `bus.handlers(Arc::new(service))`.
fn expand_impl(cx: &mut Ctxt, bus: Bus, block: ItemImpl, aggregate: bool) -> TokenStream {
    if !block.generics.params.is_empty() {
        cx.error_spanned_by(
            &block.generics,
            format!(
                "`#[{}]` does not support generic impl blocks",
                bus.macro_name()
            ),
        );
        return quote!(#block);
    }
    if let Some((_, path, _)) = &block.trait_ {
        cx.error_spanned_by(
            path,
            format!(
                "`#[{}]` goes on an inherent impl block, not a trait impl",
                bus.macro_name()
            ),
        );
        return quote!(#block);
    }
    let self_ty = &block.self_ty;
    let methods: Vec<&ImplItemFn> = block
        .items
        .iter()
        .filter_map(|i| match i {
            ImplItem::Fn(f) if f.sig.asyncness.is_some() => Some(f),
            _ => None,
        })
        .collect();
    if methods.is_empty() {
        cx.error_spanned_by(
            self_ty,
            format!(
                "no async handler methods in this impl block for `#[{}]`",
                bus.macro_name()
            ),
        );
        return quote!(#block);
    }
    let mut wrappers = Vec::new();
    let mut registrations = Vec::new();
    let mut seen: Vec<(String, &ImplItemFn)> = Vec::new();
    for m in methods {
        let Some(parsed) = parse_signature(cx, bus, &m.sig, true) else {
            continue;
        };
        let message = &parsed.message;
        let key = quote!(#message).to_string();
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            cx.error_spanned_by(
                message,
                format!(
                    "two handlers for one {}: `{}` already handles `{}`",
                    bus.what(),
                    first.sig.ident,
                    key.replace(' ', "")
                ),
            );
            continue;
        }
        seen.push((key, m));
        let method = &m.sig.ident;
        if aggregate {
            let (wrapper, registration) = aggregate_handler(&parsed, self_ty, method);
            wrappers.push(wrapper);
            registrations.push(registration);
            continue;
        }
        registrations.push(method_registration(bus, &parsed, method));
    }
    if aggregate {
        return quote! {
            #block

            const _: () = {
                #(#wrappers)*

                #[automatically_derived]
                impl ::eventbus_core::es::AggregateHandlers for #self_ty {
                    fn register(
                        bus: ::eventbus_core::CommandBus,
                        repository: &::eventbus_core::es::Repository<Self>,
                    ) -> ::eventbus_core::CommandBus {
                        #(#registrations)*
                        bus
                    }
                }
            };
        };
    }
    let (trait_name, bus_ty) = match bus {
        Bus::Command => (
            quote!(::eventbus_core::CommandHandlers),
            quote!(::eventbus_core::CommandBus),
        ),
        Bus::Query => (
            quote!(::eventbus_core::QueryHandlers),
            quote!(::eventbus_core::QueryBus),
        ),
    };
    quote! {
        #block

        const _: () = {
            #(#wrappers)*

            #[automatically_derived]
            impl #trait_name for #self_ty {
                fn register(self: ::std::sync::Arc<Self>, bus: #bus_ty) -> #bus_ty {
                    #(#registrations)*
                    bus
                }
            }
        };
    }
}

/// An aggregate's handler method: a unit struct implementing `AggregateHandler<Self, M>`
/// that calls the method on the loaded state, and its registration.
fn aggregate_handler(
    parsed: &Parsed,
    self_ty: &Type,
    method: &syn::Ident,
) -> (TokenStream, TokenStream) {
    let message = &parsed.message;
    let wrapper = format_ident!("__AggregateHandler_{}", method);
    let args = match parsed.extra {
        Extra::Context => quote!(message, ctx),
        _ => quote!(message),
    };
    let span = parsed.ret_span;
    let body = quote_spanned! {span=>
        let output: ::core::result::Result<
            <#message as ::eventbus_core::Command>::Output,
            <#message as ::eventbus_core::Command>::Error,
        > = state.#method(#args).await;
        output
    };
    let wrapper_def = quote! {
        #[allow(non_camel_case_types)]
        struct #wrapper;

        #[automatically_derived]
        impl ::eventbus_core::es::AggregateHandler<#self_ty, #message> for #wrapper {
            fn handle<'a>(
                &'a self,
                state: &'a #self_ty,
                message: #message,
                ctx: &'a ::eventbus_core::CommandContext,
            ) -> ::eventbus_core::__private::BoxFuture<
                'a,
                ::core::result::Result<
                    <#message as ::eventbus_core::Command>::Output,
                    <#message as ::eventbus_core::Command>::Error,
                >,
            > {
                let _ = ctx;
                ::std::boxed::Box::pin(async move { #body })
            }
        }
    };
    let registration = quote! {
        let bus = bus.handle_aggregate::<Self, #message>(
            ::core::clone::Clone::clone(repository),
            #wrapper,
        );
    };
    (wrapper_def, registration)
}
