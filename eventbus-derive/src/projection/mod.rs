//! Expansion of `#[projection]`: a `ReadModel` impl (how events change the read model) and
//! typed reads (`load`, `list`, `members`, `get`).

mod attr;
mod check;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::{Data, DeriveInput, Fields, Ident, Lit, Path, Type};

use crate::ctxt::Ctxt;
use attr::{is_field_attr, parse_field_attr, parse_projection_args, By, FieldRule, Shape};
use check::Segment;

/// What one event does to a hash.
enum Action {
    Set {
        field: String,
        source: Ident,
    },
    Const {
        field: String,
        value: String,
    },
    Timestamp {
        field: String,
    },
    Incr {
        field: String,
        by: TokenStream,
        float: bool,
    },
    Delete,
}

/// Actions grouped by event type, in first-mention order (paths compared as written).
#[derive(Default)]
struct PerEvent(Vec<(Path, Vec<Action>)>);

impl PerEvent {
    fn push(&mut self, event: &Path, action: Action) {
        let key = event.to_token_stream().to_string();
        match self
            .0
            .iter_mut()
            .find(|(p, _)| p.to_token_stream().to_string() == key)
        {
            Some((_, actions)) => actions.push(action),
            None => self.0.push((event.clone(), vec![action])),
        }
    }
}

/// Expands `#[projection(args)] item`.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let mut item: DeriveInput = match syn::parse2(input) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let args = parse_projection_args(&mut cx, args);
    let shape = check::shape_args(&mut cx, &args);
    let segments = args
        .shape
        .as_ref()
        .and_then(|(_, _, lit)| check::template(&mut cx, lit));
    let name = args
        .name
        .as_ref()
        .and_then(|n| check::name(&mut cx, n))
        .unwrap_or_else(|| item.ident.to_string());
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(&item.generics, "a projection type cannot be generic");
    }

    // Field rules (hash projections), stripped from the emitted struct.
    let mut per_event = PerEvent::default();
    let mut loads = Vec::new();
    match &mut item.data {
        Data::Struct(s) => {
            for (i, field) in s.fields.iter_mut().enumerate() {
                let attrs: Vec<_> = field
                    .attrs
                    .iter()
                    .filter(|a| is_field_attr(a))
                    .cloned()
                    .collect();
                field.attrs.retain(|a| !is_field_attr(a));
                let Some(ident) = field.ident.clone() else {
                    if let Some(a) = attrs.first() {
                        cx.error_spanned_by(a, "field attributes need named fields");
                    }
                    let _ = i;
                    continue;
                };
                if shape.is_some_and(|s| s != Shape::Hash) {
                    if let Some(a) = attrs.first() {
                        cx.error_spanned_by(a, "field attributes apply to `hash` projections only");
                    }
                    continue;
                }
                let field_name = ident.to_string();
                let float = is_float(&field.ty);
                let mut incr = false;
                for attr in &attrs {
                    for rule in parse_field_attr(&mut cx, attr) {
                        rule_actions(
                            &mut cx,
                            &mut per_event,
                            &field_name,
                            &ident,
                            float,
                            rule,
                            &mut incr,
                        );
                    }
                }
                let ty = &field.ty;
                let default = if incr {
                    quote!(::core::option::Option::Some(
                        ::core::default::Default::default()
                    ))
                } else {
                    quote!(::core::option::Option::None)
                };
                loads.push(quote! {
                    #ident: ::eventbus_core::__private::read_field::<#ty>(&__hash, &__key, #field_name, #default)?
                });
            }
        }
        Data::Enum(e) => cx.error_spanned_by(e.enum_token, "a projection must be a struct"),
        Data::Union(u) => cx.error_spanned_by(u.union_token, "a projection must be a struct"),
    }
    if let Some((_, events)) = &args.delete_on {
        for e in events {
            per_event.push(e, Action::Delete);
        }
    }
    if shape == Some(Shape::Hash) && per_event.0.is_empty() {
        if let Some((_, kw, _)) = &args.shape {
            cx.error_spanned_by(kw, "this projection reads no event: add `#[set(from = Event)]` (or `#[set]`, `#[timestamp]`, `#[incr]`) to a field, or `delete_on = Event`");
        }
    }
    if shape == Some(Shape::Hash) {
        if let Data::Struct(s) = &item.data {
            if !matches!(s.fields, Fields::Named(_)) {
                cx.error_spanned_by(&item.ident, "a `hash` projection needs named fields");
            }
        }
    }

    let errors = cx.finish();
    let ident = &item.ident;
    let reads = match (&args.shape, &segments) {
        (Some((shape, _, _)), Some(segments)) if item.generics.params.is_empty() => {
            reads(&item, *shape, segments, &loads)
        }
        _ => quote!(),
    };
    let read_model = match (&errors, shape, &segments) {
        (None, Some(shape), Some(segments)) => {
            let (events, body) = apply_body(shape, segments, &args, &per_event);
            impl_read_model(ident, &name, &events, body)
        }
        // Fallback: one mistake doesn't cascade into "not a read model" errors.
        _ => impl_read_model(
            ident,
            &name,
            &[],
            quote!(::core::result::Result::Ok(::std::vec::Vec::new())),
        ),
    };
    let errors = errors.map(|e| e.to_compile_error());
    quote! {
        #errors
        #item
        const _: () = {
            #read_model
            #reads
        };
    }
}

fn is_float(ty: &Type) -> bool {
    let s = ty.to_token_stream().to_string();
    s.contains("f64") || s.contains("f32")
}

fn rule_actions(
    cx: &mut Ctxt,
    per_event: &mut PerEvent,
    field: &str,
    ident: &Ident,
    float: bool,
    rule: FieldRule,
    incr: &mut bool,
) {
    match rule {
        FieldRule::From { events, source } => {
            let source = source.unwrap_or_else(|| ident.clone());
            for e in &events {
                per_event.push(
                    e,
                    Action::Set {
                        field: field.to_owned(),
                        source: source.clone(),
                    },
                );
            }
        }
        FieldRule::Const { event, value } => {
            let value = match &value {
                Lit::Str(s) => s.value(),
                Lit::Int(i) => i.base10_digits().to_owned(),
                Lit::Float(f) => f.base10_digits().to_owned(),
                Lit::Bool(b) => b.value.to_string(),
                other => {
                    cx.error_spanned_by(other, "a constant must be a string, number or boolean");
                    return;
                }
            };
            per_event.push(
                &event,
                Action::Const {
                    field: field.to_owned(),
                    value,
                },
            );
        }
        FieldRule::Timestamp { events } => {
            for e in &events {
                per_event.push(
                    e,
                    Action::Timestamp {
                        field: field.to_owned(),
                    },
                );
            }
        }
        FieldRule::Incr { events, by } => {
            *incr = true;
            let by = match by {
                By::One if float => quote!(1.0),
                By::One => quote!(1),
                By::Value(v) if float => quote!((#v) as ::core::primitive::f64),
                By::Value(v) => {
                    if matches!(&v, syn::Expr::Lit(l) if matches!(l.lit, Lit::Float(_))) {
                        cx.error_spanned_by(&v, "an integer field is incremented by an integer; make the field `f64` for `HINCRBYFLOAT`");
                    }
                    quote!((#v) as ::core::primitive::i64)
                }
                By::Field(f) => {
                    let name = f.to_string();
                    let access = quote_spanned!(f.span()=> &__event.#f);
                    if float {
                        quote!(::eventbus_core::__private::number(#access, #name)?)
                    } else {
                        quote!(::eventbus_core::__private::number(#access, #name)? as ::core::primitive::i64)
                    }
                }
            };
            for e in &events {
                per_event.push(
                    e,
                    Action::Incr {
                        field: field.to_owned(),
                        by: by.clone(),
                        float,
                    },
                );
            }
        }
    }
}

/// Code building the key from `__event`'s fields.
fn key_from_event(segments: &[Segment]) -> TokenStream {
    let parts = segments.iter().map(|s| match s {
        Segment::Text(t) => quote!(__key.push_str(#t);),
        Segment::Field(f) => {
            let name = f.to_string();
            let access = quote_spanned!(f.span()=> &__event.#f);
            quote!(__key.push_str(&::eventbus_core::__private::key_part(#access, #name)?);)
        }
    });
    quote! {{
        let mut __key = ::std::string::String::new();
        #(#parts)*
        __key
    }}
}

fn event_type(path: &Path) -> TokenStream {
    quote!(<#path as ::eventbus_core::Event>::EVENT_TYPE)
}

/// The event types read, and the body of `apply`.
fn apply_body(
    shape: Shape,
    segments: &[Segment],
    args: &attr::ProjectionArgs,
    per_event: &PerEvent,
) -> (Vec<Path>, TokenStream) {
    let key = key_from_event(segments);
    let mut events: Vec<Path> = Vec::new();
    let mut branches = Vec::new();
    let mut branch = |events: &mut Vec<Path>, path: &Path, body: TokenStream| {
        let ty = event_type(path);
        if !events
            .iter()
            .any(|p| p.to_token_stream().to_string() == path.to_token_stream().to_string())
        {
            events.push(path.clone());
        }
        branches.push(quote! {
            if event.event_type == #ty {
                let __event: #path = ::eventbus_core::__private::decode::<#path>(event)?;
                let __key: ::std::string::String = #key;
                #body
            }
        });
    };
    let op = quote!(::eventbus_core::__private::ReadModelOp);
    match shape {
        Shape::Hash => {
            for (path, actions) in &per_event.0 {
                let mut sets = Vec::new();
                let mut after = Vec::new();
                for a in actions {
                    match a {
                        Action::Set { field, source } => {
                            let access = quote_spanned!(source.span()=> &__event.#source);
                            sets.push(quote!(__hash.set(#field, ::eventbus_core::__private::value(#access)?);));
                        }
                        Action::Const { field, value } => sets.push(quote!(
                            __hash.set(#field, ::core::option::Option::Some(::std::string::String::from(#value)));
                        )),
                        Action::Timestamp { field } => sets.push(quote!(
                            __hash.set(#field, ::core::option::Option::Some(::eventbus_core::__private::timestamp(event.timestamp)));
                        )),
                        Action::Incr { field, by, float: true } => after.push(quote!(
                            __ops.push(#op::HashIncrFloat { key: __key.clone(), field: ::std::string::String::from(#field), by: #by });
                        )),
                        Action::Incr { field, by, float: false } => after.push(quote!(
                            __ops.push(#op::HashIncr { key: __key.clone(), field: ::std::string::String::from(#field), by: #by });
                        )),
                        Action::Delete => {}
                    }
                }
                if actions.iter().any(|a| matches!(a, Action::Delete)) {
                    after.push(quote!(__ops.push(#op::Delete { key: __key.clone() });));
                }
                branch(
                    &mut events,
                    path,
                    quote! {
                        let mut __hash = ::eventbus_core::__private::HashWrite::new(__key.clone());
                        #(#sets)*
                        __hash.finish(&mut __ops);
                        #(#after)*
                    },
                );
            }
        }
        Shape::List | Shape::Set => {
            let (field, add_op, remove_op) = if shape == Shape::List {
                let max_len = match &args.max_len {
                    Some((_, n)) => quote!(::core::option::Option::Some(#n)),
                    None => quote!(::core::option::Option::None),
                };
                let end = if args.push_back.is_some() {
                    quote!(Back)
                } else {
                    quote!(Front)
                };
                (
                    args.push.as_ref().map(|p| p.1.clone()),
                    quote!(#op::ListPush { key: __key, values: ::std::vec![__value], end: ::eventbus_core::__private::ListEnd::#end, max_len: #max_len }),
                    quote!(#op::ListRemove { key: __key, value: __value }),
                )
            } else {
                (
                    args.add.as_ref().map(|p| p.1.clone()),
                    quote!(#op::SetAdd { key: __key, members: ::std::vec![__value] }),
                    quote!(#op::SetRemove { key: __key, members: ::std::vec![__value] }),
                )
            };
            let Some(field) = field else {
                return (
                    events,
                    quote!(::core::result::Result::Ok(::std::vec::Vec::new())),
                );
            };
            let name = field.to_string();
            let access = quote_spanned!(field.span()=> &__event.#field);
            let value =
                quote!(let __value = ::eventbus_core::__private::key_part(#access, #name)?;);
            for p in args.on.iter().flat_map(|o| &o.1) {
                branch(&mut events, p, quote!(#value __ops.push(#add_op);));
            }
            for p in args.remove_on.iter().flat_map(|o| &o.1) {
                branch(&mut events, p, quote!(#value __ops.push(#remove_op);));
            }
        }
        Shape::Counter => {
            let by = match &args.by {
                Some((_, n)) => quote!(#n),
                None => quote!(1),
            };
            for p in args.on.iter().flat_map(|o| &o.1) {
                branch(
                    &mut events,
                    p,
                    quote!(__ops.push(#op::Incr { key: __key, by: #by });),
                );
            }
            for p in args.decr_on.iter().flat_map(|o| &o.1) {
                branch(
                    &mut events,
                    p,
                    quote!(__ops.push(#op::Incr { key: __key, by: -(#by) });),
                );
            }
        }
    }
    let body = quote! {
        let mut __ops = ::std::vec::Vec::new();
        #(#branches)*
        ::core::result::Result::Ok(__ops)
    };
    (events, body)
}

fn impl_read_model(ident: &Ident, name: &str, events: &[Path], body: TokenStream) -> TokenStream {
    let types = events.iter().map(event_type);
    quote! {
        #[automatically_derived]
        impl ::eventbus_core::__private::ReadModel for #ident {
            const NAME: &'static ::core::primitive::str = #name;

            fn event_types() -> ::std::vec::Vec<&'static ::core::primitive::str> {
                ::std::vec![#(#types),*]
            }

            #[allow(unused_variables, clippy::needless_late_init)]
            fn apply(
                event: &::eventbus_core::Envelope<::eventbus_core::__private::serde_json::Value>,
            ) -> ::core::result::Result<
                ::std::vec::Vec<::eventbus_core::__private::ReadModelOp>,
                ::eventbus_core::HandlerError,
            > {
                #body
            }
        }
    }
}

/// `key(...)` and the typed read of the shape.
fn reads(
    item: &DeriveInput,
    shape: Shape,
    segments: &[Segment],
    loads: &[TokenStream],
) -> TokenStream {
    let ident = &item.ident;
    let vis = &item.vis;
    let params: Vec<Ident> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Field(f) => Some(Ident::new(&f.to_string(), Span::call_site())),
            Segment::Text(_) => None,
        })
        .collect();
    let parts = segments.iter().map(|s| match s {
        Segment::Text(t) => quote!(__key.push_str(#t);),
        Segment::Field(f) => {
            let p = Ident::new(&f.to_string(), Span::call_site());
            quote!(__key.push_str(#p);)
        }
    });
    let key_args = quote!(#(#params: &::core::primitive::str),*);
    let args = quote!(#(#params: &::core::primitive::str,)*);
    let call = quote!(#(#params),*);
    let result = |t: TokenStream| quote!(::core::result::Result<#t, ::eventbus_core::Error>);
    let models = quote!(models: &::eventbus_core::ReadModels);
    let read = match shape {
        Shape::Hash => {
            let out = result(quote!(::core::option::Option<Self>));
            quote! {
                /// Loads the read model of one entity; `None` when it doesn't exist.
                #vis async fn load(#models, #args) -> #out {
                    let __key = Self::key(#call);
                    let __hash = match models.hash(&__key).await? {
                        ::core::option::Option::Some(h) => h,
                        ::core::option::Option::None => return ::core::result::Result::Ok(::core::option::Option::None),
                    };
                    ::core::result::Result::Ok(::core::option::Option::Some(Self { #(#loads),* }))
                }
            }
        }
        Shape::List => {
            let out = result(quote!(::std::vec::Vec<::std::string::String>));
            quote! {
                /// Reads a range of the list (`..` for all of it, `0..10` for the first ten).
                #vis async fn list(#models, #args range: impl ::core::ops::RangeBounds<::core::primitive::usize>) -> #out {
                    models.list(&Self::key(#call), range).await
                }
            }
        }
        Shape::Set => {
            let out = result(quote!(::std::collections::BTreeSet<::std::string::String>));
            quote! {
                /// Reads the set's members.
                #vis async fn members(#models, #args) -> #out {
                    models.members(&Self::key(#call)).await
                }
            }
        }
        Shape::Counter => {
            let out = result(quote!(::core::primitive::i64));
            quote! {
                /// Reads the counter (0 when it doesn't exist).
                #vis async fn get(#models, #args) -> #out {
                    models.counter(&Self::key(#call)).await
                }
            }
        }
    };
    quote! {
        #[automatically_derived]
        impl #ident {
            /// The read model's key for these key fields.
            #vis fn key(#key_args) -> ::std::string::String {
                let mut __key = ::std::string::String::new();
                #(#parts)*
                __key
            }

            #read
        }
    }
}
