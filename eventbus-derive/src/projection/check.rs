//! Validation of `#[projection]` input: key templates, names, and which arguments fit
//! which shape.

use proc_macro2::Span;
use syn::{Ident, LitStr};

use crate::ctxt::Ctxt;
use crate::projection::attr::{ProjectionArgs, Shape};

/// A piece of a key template.
pub(crate) enum Segment {
    /// Literal text.
    Text(String),
    /// `{field}`: an event field, with the template's span (so that a missing field is
    /// reported at the template).
    Field(Ident),
}

/// Parses `orders:summary:{order_id}`; `{{` and `}}` are literal braces.
pub(crate) fn template(cx: &mut Ctxt, lit: &LitStr) -> Option<Vec<Segment>> {
    let text = lit.value();
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                buf.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                buf.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    cx.error_spanned_by(
                        lit,
                        "unclosed `{` in key template (write `{{` for a literal brace)",
                    );
                    return None;
                }
                let name = name.trim();
                let ident = match syn::parse_str::<Ident>(name) {
                    Ok(_) if !name.is_empty() => Ident::new(name, lit.span()),
                    _ => {
                        cx.error_spanned_by(
                            lit,
                            format!("`{{{name}}}` in a key template must name an event field, e.g. `{{order_id}}`"),
                        );
                        return None;
                    }
                };
                if !buf.is_empty() {
                    out.push(Segment::Text(std::mem::take(&mut buf)));
                }
                out.push(Segment::Field(ident));
            }
            '}' => {
                cx.error_spanned_by(
                    lit,
                    "unmatched `}` in key template (write `}}` for a literal brace)",
                );
                return None;
            }
            c => buf.push(c),
        }
    }
    if !buf.is_empty() {
        out.push(Segment::Text(buf));
    }
    if out.is_empty() {
        cx.error_spanned_by(lit, "key template must not be empty");
        return None;
    }
    Some(out)
}

/// Checks a projection name; returns it when valid.
pub(crate) fn name(cx: &mut Ctxt, lit: &LitStr) -> Option<String> {
    let name = lit.value();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '*') {
        cx.error_spanned_by(
            lit,
            "projection name must be non-empty, without whitespace or `*`",
        );
        return None;
    }
    Some(name)
}

/// Checks that the arguments fit the shape; returns the shape when there is one.
pub(crate) fn shape_args(cx: &mut Ctxt, args: &ProjectionArgs) -> Option<Shape> {
    let Some((shape, _, _)) = &args.shape else {
        cx.push(syn::Error::new(
            Span::call_site(),
            "a projection needs a shape: `hash = \"…\"`, `list = \"…\"`, `set = \"…\"` or `counter = \"…\"`",
        ));
        return None;
    };
    let shape = *shape;
    let mut only = |present: Option<&Ident>, shapes: &[Shape]| {
        if let Some(key) = present {
            if !shapes.contains(&shape) {
                let names: Vec<_> = shapes
                    .iter()
                    .map(|s| format!("`{}`", s.keyword()))
                    .collect();
                cx.error_spanned_by(
                    key,
                    format!(
                        "`{key}` applies to {} projections, not `{}`",
                        names.join(" and "),
                        shape.keyword()
                    ),
                );
            }
        }
    };
    only(
        args.on.as_ref().map(|o| &o.0),
        &[Shape::List, Shape::Set, Shape::Counter],
    );
    only(
        args.remove_on.as_ref().map(|o| &o.0),
        &[Shape::List, Shape::Set],
    );
    only(args.delete_on.as_ref().map(|o| &o.0), &[Shape::Hash]);
    only(args.decr_on.as_ref().map(|o| &o.0), &[Shape::Counter]);
    only(args.push.as_ref().map(|o| &o.0), &[Shape::List]);
    only(args.push_back.as_ref(), &[Shape::List]);
    only(args.max_len.as_ref().map(|o| &o.0), &[Shape::List]);
    only(args.add.as_ref().map(|o| &o.0), &[Shape::Set]);
    only(args.by.as_ref().map(|o| &o.0), &[Shape::Counter]);
    let keyword = args.shape.as_ref().map(|s| &s.1);
    let mut require = |missing: bool, what: &str| {
        if missing {
            if let Some(k) = keyword {
                cx.error_spanned_by(
                    k,
                    format!("a `{}` projection needs {what}", shape.keyword()),
                );
            }
        }
    };
    match shape {
        Shape::Hash => {}
        Shape::List => {
            require(
                args.push.is_none(),
                "`push = field` (the event field pushed)",
            );
            require(args.on.is_none(), "`on = Event` (the events that push)");
        }
        Shape::Set => {
            require(args.add.is_none(), "`add = field` (the event field added)");
            require(args.on.is_none(), "`on = Event` (the events that add)");
        }
        Shape::Counter => require(args.on.is_none(), "`on = Event` (the events that count)"),
    }
    if let Some((_, n)) = &args.max_len {
        if n.base10_parse::<usize>().map_or(true, |n| n == 0) {
            cx.error_spanned_by(n, "`max_len` must be a positive integer");
        }
    }
    Some(shape)
}
