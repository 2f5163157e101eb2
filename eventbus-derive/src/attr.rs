//! Parsing of `#[event(...)]` arguments.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitInt, LitStr, Meta, Token};

use crate::ctxt::Ctxt;

/// The arguments of `#[event]`, as written.
#[derive(Default)]
pub(crate) struct EventArgs {
    /// `name = "…"`.
    pub(crate) name: Option<LitStr>,
    /// `version = N`.
    pub(crate) version: Option<LitInt>,
    /// `upcasters = [v1_to_v2, …]`: the n-th upgrades version n to n + 1.
    pub(crate) upcasters: Option<syn::ExprArray>,
    /// `partition_key = field`: the field whose `to_string()` is the event's partition key.
    pub(crate) partition_key: Option<syn::Ident>,
}

/// Parses `name = "…", version = N, upcasters = […], partition_key = field`, recording every problem in `cx`.
pub(crate) fn parse_event_args(cx: &mut Ctxt, args: TokenStream) -> EventArgs {
    let mut out = EventArgs::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(e) => {
            cx.push(e);
            return out;
        }
    };
    for meta in metas {
        let Meta::NameValue(nv) = &meta else {
            cx.error_spanned_by(
                &meta,
                "expected `name = \"...\"`, `version = N`, `upcasters = [...]` or \
                 `partition_key = field`",
            );
            continue;
        };
        let Some(key) = nv.path.get_ident() else {
            cx.error_spanned_by(&nv.path, "expected `name` or `version`");
            continue;
        };
        match key.to_string().as_str() {
            "name" => {
                if out.name.is_some() {
                    cx.error_spanned_by(key, "duplicate event attribute `name`");
                    continue;
                }
                match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => out.name = Some(s.clone()),
                    other => cx.error_spanned_by(
                        other,
                        "`name` must be a string literal, e.g. `name = \"OrderCreated\"`",
                    ),
                }
            }
            "version" => {
                if out.version.is_some() {
                    cx.error_spanned_by(key, "duplicate event attribute `version`");
                    continue;
                }
                match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => out.version = Some(i.clone()),
                    other => cx.error_spanned_by(
                        other,
                        "`version` must be an integer literal, e.g. `version = 2`",
                    ),
                }
            }
            "upcasters" => {
                if out.upcasters.is_some() {
                    cx.error_spanned_by(key, "duplicate event attribute `upcasters`");
                    continue;
                }
                match &nv.value {
                    Expr::Array(array) => out.upcasters = Some(array.clone()),
                    other => cx.error_spanned_by(
                        other,
                        "`upcasters` must be a list of functions, e.g. `upcasters = [v1_to_v2]`",
                    ),
                }
            }
            "partition_key" => {
                if out.partition_key.is_some() {
                    cx.error_spanned_by(key, "duplicate event attribute `partition_key`");
                    continue;
                }
                match &nv.value {
                    Expr::Path(p) if p.qself.is_none() && p.path.get_ident().is_some() => {
                        out.partition_key = p.path.get_ident().cloned();
                    }
                    other => cx.error_spanned_by(
                        other,
                        "`partition_key` must be the name of a field, e.g. \
                         `partition_key = customer_id`",
                    ),
                }
            }
            _ => cx.error_spanned_by(
                key,
                format!(
                    "unknown event attribute `{key}`; expected `name`, `version`, `upcasters` \
                     or `partition_key`"
                ),
            ),
        }
    }
    out
}

/// The arguments of `#[route(...)]`, as written.
#[derive(Default)]
pub(crate) struct RouteArgs {
    /// The pattern, the first argument.
    pub(crate) pattern: Option<LitStr>,
    /// `priority = N`.
    pub(crate) priority: Option<Expr>,
    /// `filter = path`.
    pub(crate) filter: Option<Expr>,
    /// `name = "…"`.
    pub(crate) name: Option<LitStr>,
}

enum RouteItem {
    Pattern(LitStr),
    Meta(Box<Meta>),
}

/// Parses `"Pattern", priority = N, filter = path, name = "…"`, recording every problem in
/// `cx`.
pub(crate) fn parse_route_args(cx: &mut Ctxt, args: TokenStream) -> RouteArgs {
    let mut out = RouteArgs::default();
    let parser = |input: syn::parse::ParseStream| {
        let mut items = Vec::new();
        while !input.is_empty() {
            if input.peek(LitStr) {
                items.push(RouteItem::Pattern(input.parse()?));
            } else {
                items.push(RouteItem::Meta(Box::new(input.parse()?)));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(items)
    };
    let items = match parser.parse2(args) {
        Ok(items) => items,
        Err(e) => {
            cx.push(e);
            return out;
        }
    };
    for item in items {
        let meta = match item {
            RouteItem::Pattern(lit) => {
                if out.pattern.is_some() {
                    cx.error_spanned_by(&lit, "a route has one pattern");
                } else {
                    out.pattern = Some(lit);
                }
                continue;
            }
            RouteItem::Meta(meta) => *meta,
        };
        let Meta::NameValue(nv) = &meta else {
            cx.error_spanned_by(
                &meta,
                "expected `priority = N`, `filter = path` or `name = \"...\"`",
            );
            continue;
        };
        let Some(key) = nv.path.get_ident() else {
            cx.error_spanned_by(&nv.path, "expected `priority`, `filter` or `name`");
            continue;
        };
        let slot = match key.to_string().as_str() {
            "priority" => &mut out.priority,
            "filter" => &mut out.filter,
            "name" => {
                if out.name.is_some() {
                    cx.error_spanned_by(key, "duplicate route attribute `name`");
                    continue;
                }
                match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => out.name = Some(s.clone()),
                    other => cx.error_spanned_by(other, "`name` must be a string literal"),
                }
                continue;
            }
            _ => {
                cx.error_spanned_by(
                    key,
                    format!(
                        "unknown route attribute `{key}`; expected `priority`, `filter` or `name`"
                    ),
                );
                continue;
            }
        };
        if slot.is_some() {
            cx.error_spanned_by(key, format!("duplicate route attribute `{key}`"));
            continue;
        }
        *slot = Some(nv.value.clone());
    }
    out
}
