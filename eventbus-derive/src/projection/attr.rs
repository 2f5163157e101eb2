//! Parsing of `#[projection(...)]` and of its field attributes (`#[set]`, `#[timestamp]`,
//! `#[incr]`).

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, ExprLit, Ident, Lit, LitInt, LitStr, Meta, Path, Token};

use crate::ctxt::Ctxt;

/// The read model's shape: what Redis type holds it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Hash,
    List,
    Set,
    Counter,
}

impl Shape {
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Shape::Hash => "hash",
            Shape::List => "list",
            Shape::Set => "set",
            Shape::Counter => "counter",
        }
    }
}

/// The arguments of `#[projection]`, as written.
#[derive(Default)]
pub(crate) struct ProjectionArgs {
    /// `hash = "…"` (or `list`, `set`, `counter`), with its keyword.
    pub(crate) shape: Option<(Shape, Ident, LitStr)>,
    pub(crate) name: Option<LitStr>,
    /// `on = E` or `on = [E, F]`, with the keyword.
    pub(crate) on: Option<(Ident, Vec<Path>)>,
    pub(crate) remove_on: Option<(Ident, Vec<Path>)>,
    pub(crate) delete_on: Option<(Ident, Vec<Path>)>,
    pub(crate) decr_on: Option<(Ident, Vec<Path>)>,
    pub(crate) push: Option<(Ident, Ident)>,
    pub(crate) add: Option<(Ident, Ident)>,
    pub(crate) max_len: Option<(Ident, LitInt)>,
    pub(crate) by: Option<(Ident, LitInt)>,
    /// `push_back`: RPUSH instead of LPUSH.
    pub(crate) push_back: Option<Ident>,
}

const KEYS: &str = "`hash`, `list`, `set`, `counter`, `name`, `on`, `push`, `add`, `remove_on`, \
                    `delete_on`, `decr_on`, `max_len`, `by` or `push_back`";

/// `E` or `[E, F]`.
pub(crate) fn paths(cx: &mut Ctxt, expr: &Expr) -> Vec<Path> {
    match expr {
        Expr::Path(p) => vec![p.path.clone()],
        Expr::Array(a) => a.elems.iter().flat_map(|e| paths(cx, e)).collect(),
        other => {
            cx.error_spanned_by(other, "expected an event type, or a list of them: `[A, B]`");
            Vec::new()
        }
    }
}

fn ident(cx: &mut Ctxt, expr: &Expr, what: &str) -> Option<Ident> {
    if let Expr::Path(p) = expr {
        if let Some(i) = p.path.get_ident() {
            return Some(i.clone());
        }
    }
    cx.error_spanned_by(
        expr,
        format!("`{what}` takes an event field name, e.g. `{what} = order_id`"),
    );
    None
}

fn int(cx: &mut Ctxt, expr: &Expr, what: &str) -> Option<LitInt> {
    if let Expr::Lit(ExprLit {
        lit: Lit::Int(i), ..
    }) = expr
    {
        return Some(i.clone());
    }
    // `by = -1` parses as a unary expression.
    if let Expr::Unary(u) = expr {
        if let (
            syn::UnOp::Neg(_),
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }),
        ) = (&u.op, &*u.expr)
        {
            return Some(LitInt::new(&format!("-{}", i.base10_digits()), i.span()));
        }
    }
    cx.error_spanned_by(expr, format!("`{what}` takes an integer literal"));
    None
}

fn put<T>(cx: &mut Ctxt, slot: &mut Option<T>, key: &Ident, value: Option<T>) {
    if slot.is_some() {
        cx.error_spanned_by(key, format!("duplicate projection attribute `{key}`"));
    } else if value.is_some() {
        *slot = value;
    }
}

/// Parses the arguments, recording every problem in `cx`.
pub(crate) fn parse_projection_args(cx: &mut Ctxt, args: TokenStream) -> ProjectionArgs {
    let mut out = ProjectionArgs::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(e) => {
            cx.push(e);
            return out;
        }
    };
    for meta in metas {
        if let Meta::Path(p) = &meta {
            if p.is_ident("push_back") {
                let key = p.get_ident().cloned();
                put(cx, &mut out.push_back, &p.segments[0].ident, key);
                continue;
            }
        }
        let Meta::NameValue(nv) = &meta else {
            cx.error_spanned_by(
                &meta,
                format!("expected `key = value` with key one of {KEYS}"),
            );
            continue;
        };
        let Some(key) = nv.path.get_ident().cloned() else {
            cx.error_spanned_by(&nv.path, format!("expected one of {KEYS}"));
            continue;
        };
        let v = &nv.value;
        let shape = match key.to_string().as_str() {
            "hash" => Some(Shape::Hash),
            "list" => Some(Shape::List),
            "set" => Some(Shape::Set),
            "counter" => Some(Shape::Counter),
            _ => None,
        };
        if let Some(shape) = shape {
            let Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) = v
            else {
                cx.error_spanned_by(v, format!("`{key}` takes a key template, e.g. `{key} = \"orders:summary:{{order_id}}\"`"));
                continue;
            };
            match &out.shape {
                Some((other, _, _)) => cx.error_spanned_by(
                    &key,
                    format!(
                        "conflicting shapes: a projection is one `{}` or one `{}`, not both; declare two projections",
                        other.keyword(),
                        shape.keyword()
                    ),
                ),
                None => out.shape = Some((shape, key.clone(), s.clone())),
            }
            continue;
        }
        match key.to_string().as_str() {
            "name" => match v {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => put(cx, &mut out.name, &key, Some(s.clone())),
                _ => cx.error_spanned_by(v, "`name` must be a string literal"),
            },
            "on" => {
                let p = Some((key.clone(), paths(cx, v)));
                put(cx, &mut out.on, &key, p)
            }
            "remove_on" => {
                let p = Some((key.clone(), paths(cx, v)));
                put(cx, &mut out.remove_on, &key, p)
            }
            "delete_on" => {
                let p = Some((key.clone(), paths(cx, v)));
                put(cx, &mut out.delete_on, &key, p)
            }
            "decr_on" => {
                let p = Some((key.clone(), paths(cx, v)));
                put(cx, &mut out.decr_on, &key, p)
            }
            "push" => {
                let i = ident(cx, v, "push").map(|i| (key.clone(), i));
                put(cx, &mut out.push, &key, i)
            }
            "add" => {
                let i = ident(cx, v, "add").map(|i| (key.clone(), i));
                put(cx, &mut out.add, &key, i)
            }
            "max_len" => {
                let i = int(cx, v, "max_len").map(|i| (key.clone(), i));
                put(cx, &mut out.max_len, &key, i)
            }
            "by" => {
                let i = int(cx, v, "by").map(|i| (key.clone(), i));
                put(cx, &mut out.by, &key, i)
            }
            _ => cx.error_spanned_by(
                &key,
                format!("unknown projection attribute `{key}`; expected one of {KEYS}"),
            ),
        }
    }
    out
}

/// How much an `#[incr]` adds.
pub(crate) enum By {
    One,
    /// A literal (maybe negated).
    Value(Expr),
    /// An event field.
    Field(Ident),
}

/// One field attribute, as written.
pub(crate) enum FieldRule {
    /// `#[set(from = E, field = f)]`.
    From {
        events: Vec<Path>,
        source: Option<Ident>,
    },
    /// `#[set(E = "value")]`.
    Const { event: Path, value: Lit },
    /// `#[timestamp(E, F)]`.
    Timestamp { events: Vec<Path> },
    /// `#[incr(E, by = n)]`.
    Incr { events: Vec<Path>, by: By },
}

/// The names of the field attributes `#[projection]` reads (and removes).
pub(crate) fn is_field_attr(attr: &Attribute) -> bool {
    ["set", "timestamp", "incr"]
        .iter()
        .any(|n| attr.path().is_ident(n))
}

/// Parses one field attribute into rules.
pub(crate) fn parse_field_attr(cx: &mut Ctxt, attr: &Attribute) -> Vec<FieldRule> {
    let metas = match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
        Ok(m) => m,
        Err(e) => {
            cx.push(e);
            return Vec::new();
        }
    };
    let mut rules = Vec::new();
    if attr.path().is_ident("set") {
        let mut from = None;
        let mut source = None;
        for meta in &metas {
            let Meta::NameValue(nv) = meta else {
                cx.error_spanned_by(
                    meta,
                    "expected `from = Event`, `field = name` or `Event = \"constant\"`",
                );
                continue;
            };
            if nv.path.is_ident("from") {
                from = Some(paths(cx, &nv.value));
            } else if nv.path.is_ident("field") {
                source = ident(cx, &nv.value, "field");
            } else {
                match &nv.value {
                    Expr::Lit(ExprLit { lit, .. }) => rules.push(FieldRule::Const {
                        event: nv.path.clone(),
                        value: lit.clone(),
                    }),
                    other => cx.error_spanned_by(
                        other,
                        "a constant must be a literal, e.g. `OrderShipped = \"shipped\"`",
                    ),
                }
            }
        }
        match from {
            Some(events) => rules.push(FieldRule::From { events, source }),
            None => {
                if let Some(s) = source {
                    cx.error_spanned_by(s, "`field` needs `from = Event`");
                }
            }
        }
        if rules.is_empty() && metas.is_empty() {
            cx.error_spanned_by(
                attr,
                "`#[set]` needs `from = Event` or `Event = \"constant\"`",
            );
        }
    } else if attr.path().is_ident("timestamp") {
        let mut events = Vec::new();
        for meta in &metas {
            match meta {
                Meta::Path(p) => events.push(p.clone()),
                other => {
                    cx.error_spanned_by(other, "expected event types: `#[timestamp(OrderShipped)]`")
                }
            }
        }
        if events.is_empty() {
            cx.error_spanned_by(attr, "`#[timestamp]` needs at least one event type");
        }
        rules.push(FieldRule::Timestamp { events });
    } else {
        let mut events = Vec::new();
        let mut by = By::One;
        for meta in &metas {
            match meta {
                Meta::Path(p) => events.push(p.clone()),
                Meta::NameValue(nv) if nv.path.is_ident("by") => {
                    by = match &nv.value {
                        e @ (Expr::Lit(_) | Expr::Unary(_)) => By::Value(e.clone()),
                        e => match ident(cx, e, "by") {
                            Some(i) => By::Field(i),
                            None => By::One,
                        },
                    }
                }
                other => {
                    cx.error_spanned_by(other, "expected event types and `by = n` or `by = field`")
                }
            }
        }
        if events.is_empty() {
            cx.error_spanned_by(attr, "`#[incr]` needs at least one event type");
        }
        rules.push(FieldRule::Incr { events, by });
    }
    rules
}
