//! Validation of `#[event]` input.

use syn::{
    Data, DeriveInput, Expr, ExprLit, ExprUnary, Field, Fields, Ident, Lit, LitInt, LitStr, UnOp,
};

use crate::ctxt::Ctxt;

/// Checks an event type name; returns it when valid.
pub(crate) fn event_name(cx: &mut Ctxt, lit: &LitStr) -> Option<String> {
    type_name(cx, lit, "event")
}

/// Checks the name of an event, command or query (`what`); returns it when valid.
pub(crate) fn type_name(cx: &mut Ctxt, lit: &LitStr, what: &str) -> Option<String> {
    let name = lit.value();
    if name.is_empty() {
        cx.error_spanned_by(lit, format!("{what} name must not be empty"));
        return None;
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '*' | '?' | '[' | ']'))
    {
        cx.error_spanned_by(
            lit,
            format!(
                "{what} name must not contain {c:?}: it is part of stream keys and key patterns"
            ),
        );
        return None;
    }
    Some(name)
}

/// Checks a schema version; returns it when valid.
pub(crate) fn version(cx: &mut Ctxt, lit: &LitInt) -> Option<u32> {
    match lit.base10_parse::<u32>() {
        Ok(0) => {
            cx.error_spanned_by(lit, "event version starts at 1");
            None
        }
        Ok(v) => Some(v),
        Err(_) => {
            cx.error_spanned_by(lit, "event version must fit in a u32");
            None
        }
    }
}

/// Checks that `partition_key = name` names a field of a struct event with named fields;
/// returns that field. Every error is spanned on `name`.
pub(crate) fn partition_key_field<'a>(
    cx: &mut Ctxt,
    name: &Ident,
    item: &'a DeriveInput,
) -> Option<&'a Field> {
    let fields = match &item.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(_) => {
            cx.error_spanned_by(
                name,
                "`partition_key` names a field of a struct event; for an enum, implement \
                 `eventbus_core::Event::partition_key` by hand",
            );
            return None;
        }
        // Already reported: an event can't be a union.
        Data::Union(_) => return None,
    };
    let Fields::Named(named) = fields else {
        cx.error_spanned_by(
            name,
            format!(
                "`partition_key` names a field, and `{}` has no named fields; implement \
                 `eventbus_core::Event::partition_key` by hand",
                item.ident
            ),
        );
        return None;
    };
    let found = named.named.iter().find(|f| f.ident.as_ref() == Some(name));
    if found.is_none() {
        let names: Vec<String> = named
            .named
            .iter()
            .filter_map(|f| f.ident.as_ref().map(|i| format!("`{i}`")))
            .collect();
        cx.error_spanned_by(
            name,
            format!(
                "`{}` has no field `{name}` to use as partition key; its fields are {}",
                item.ident,
                names.join(", ")
            ),
        );
    }
    found
}

/// Checks a routing pattern with the rules of `eventbus_core::Pattern::parse`; returns it
/// when valid.
pub(crate) fn pattern(cx: &mut Ctxt, lit: &LitStr) -> Option<String> {
    let pattern = lit.value();
    let reason = if pattern.is_empty() {
        Some("a pattern must not be empty")
    } else if pattern.chars().any(char::is_whitespace) {
        Some("a pattern must not contain whitespace")
    } else if pattern.split('.').any(str::is_empty) {
        Some("empty segment (segments are separated by one `.`)")
    } else if pattern
        .split('.')
        .any(|s| s.contains('*') && s != "*" && s != "**")
    {
        Some("`*` and `**` must be whole segments (`Order.*`, not `Order.Cre*`)")
    } else {
        None
    };
    match reason {
        Some(reason) => {
            cx.error_spanned_by(lit, format!("invalid routing pattern: {reason}"));
            None
        }
        None => Some(pattern),
    }
}

/// Checks a priority: an integer literal, optionally negative, that fits in an `i32`.
pub(crate) fn priority(cx: &mut Ctxt, expr: &Expr) -> Option<i32> {
    let (negative, lit) = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => (false, i),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => (true, i),
            _ => return bad_priority(cx, expr),
        },
        _ => return bad_priority(cx, expr),
    };
    let value = match lit.base10_parse::<i64>() {
        Ok(v) if negative => -v,
        Ok(v) => v,
        Err(_) => return bad_priority(cx, expr),
    };
    match i32::try_from(value) {
        Ok(v) => Some(v),
        Err(_) => {
            cx.error_spanned_by(expr, "route priority must fit in an i32");
            None
        }
    }
}

fn bad_priority(cx: &mut Ctxt, expr: &Expr) -> Option<i32> {
    cx.error_spanned_by(
        expr,
        "`priority` must be an integer literal, e.g. `priority = 10` (higher runs first)",
    );
    None
}
