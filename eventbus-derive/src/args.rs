//! A small `key = value, …` argument parser for attribute macros whose values are literals
//! or types (which `syn::Meta` can't hold: `output = Option<OrderSummary>`).

use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Ident, LitInt, LitStr, Token, Type};

use crate::ctxt::Ctxt;

/// What kind of value a key takes.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// A string literal.
    Str,
    /// A type.
    Type,
    /// An integer literal.
    Int,
}

/// A parsed value.
pub(crate) enum Value {
    Str(LitStr),
    Type(Box<Type>),
    Int(LitInt),
}

struct Pair {
    key: Ident,
    value: TokenStream,
}

impl Parse for Pair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        // Everything up to the next comma outside angle brackets is the value
        // (`output = Emitted<u32, Vec<E>>`).
        let mut value = TokenStream::new();
        let mut depth = 0usize;
        let mut after_dash = false;
        while !(input.is_empty() || depth == 0 && input.peek(Token![,])) {
            let tt: proc_macro2::TokenTree = input.parse()?;
            if let proc_macro2::TokenTree::Punct(p) = &tt {
                match p.as_char() {
                    '<' => depth += 1,
                    '>' if !after_dash => depth = depth.saturating_sub(1),
                    _ => {}
                }
                after_dash = p.as_char() == '-';
            } else {
                after_dash = false;
            }
            value.extend([tt]);
        }
        Ok(Pair { key, value })
    }
}

/// Parses `args` against the allowed `keys`, recording unknown and duplicate keys and
/// ill-typed values in `cx`. Returns the values by key, in the order of `keys`.
pub(crate) fn parse(
    cx: &mut Ctxt,
    macro_name: &str,
    args: TokenStream,
    keys: &[(&str, Kind)],
) -> Vec<Option<(Ident, Value)>> {
    let mut out: Vec<Option<(Ident, Value)>> = keys.iter().map(|_| None).collect();
    let pairs = match Punctuated::<Pair, Token![,]>::parse_terminated.parse2(args) {
        Ok(p) => p,
        Err(e) => {
            cx.push(e);
            return out;
        }
    };
    let expected = keys
        .iter()
        .map(|(k, _)| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    for pair in pairs {
        let name = pair.key.to_string();
        let Some(i) = keys.iter().position(|(k, _)| *k == name) else {
            cx.error_spanned_by(
                &pair.key,
                format!("unknown {macro_name} attribute `{name}`; expected {expected}"),
            );
            continue;
        };
        if out[i].is_some() {
            cx.error_spanned_by(
                &pair.key,
                format!("duplicate {macro_name} attribute `{name}`"),
            );
            continue;
        }
        let value = match keys[i].1 {
            Kind::Str => syn::parse2::<LitStr>(pair.value.clone()).map(Value::Str),
            Kind::Type => syn::parse2::<Type>(pair.value.clone()).map(|t| Value::Type(Box::new(t))),
            Kind::Int => syn::parse2::<LitInt>(pair.value.clone()).map(Value::Int),
        };
        match value {
            Ok(v) => out[i] = Some((pair.key, v)),
            Err(_) => {
                let what = match keys[i].1 {
                    Kind::Str => "a string literal",
                    Kind::Type => "a type",
                    Kind::Int => "an integer literal",
                };
                if pair.value.is_empty() {
                    cx.error_spanned_by(&pair.key, format!("`{name}` must be {what}"));
                } else {
                    cx.error_spanned_by(pair.value, format!("`{name}` must be {what}"));
                }
            }
        }
    }
    out
}

/// The string literal value, if any.
pub(crate) fn as_str(v: &Option<(Ident, Value)>) -> Option<&LitStr> {
    match v {
        Some((_, Value::Str(s))) => Some(s),
        _ => None,
    }
}

/// The type value, if any.
pub(crate) fn as_type(v: &Option<(Ident, Value)>) -> Option<&Type> {
    match v {
        Some((_, Value::Type(t))) => Some(t),
        _ => None,
    }
}

/// The integer literal value, if any.
pub(crate) fn as_int(v: &Option<(Ident, Value)>) -> Option<&LitInt> {
    match v {
        Some((_, Value::Int(i))) => Some(i),
        _ => None,
    }
}
