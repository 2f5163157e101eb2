//! Validation of `#[event]` input.

use syn::{LitInt, LitStr};

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
