//! Patterns over event type names, for routing rules and Pub/Sub pattern subscriptions.
//!
//! An event type name is split into segments at `.`: `Order.Item.Added` has the segments
//! `Order`, `Item` and `Added`. A pattern is a `.`-separated list of segments, each one of:
//!
//! | segment | matches |
//! |---|---|
//! | a literal (`Order`) | exactly that segment |
//! | `*` | exactly one segment |
//! | `**` | any number of segments, zero included |
//!
//! So `Payment.Failed` matches only itself, `Order.*` matches `Order.Created` but neither
//! `Order` nor `Order.Item.Added`, `*.Failed` matches `Payment.Failed`, `Order.**` matches
//! `Order`, `Order.Created` and `Order.Item.Added`, and `**` matches every event type.
//!
//! The reference article turned `Order.*` into the regex `^Order\..*$`, which also matched
//! `Order.Item.Added`; write `Order.**` for that here. A pattern is parsed and checked once,
//! when it is built ([`Pattern::parse`]); matching walks the segments without allocating and
//! builds no regex.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One segment of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: any number of segments, zero included.
    Any,
}

/// A compiled pattern over event type names; see the [module docs](self) for the syntax.
///
/// ```
/// use eventbus_core::Pattern;
///
/// let orders = Pattern::parse("Order.*")?;
/// assert!(orders.matches("Order.Created"));
/// assert!(!orders.matches("Order.Item.Added"));
/// assert!(Pattern::parse("Order.**")?.matches("Order.Item.Added"));
/// assert!(Pattern::parse("Order.Cre*").is_err());
/// # Ok::<(), eventbus_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

impl Pattern {
    /// Parses and checks a pattern.
    ///
    /// Fails with [`Error::InvalidPattern`] when it is empty, has an empty segment
    /// (`Order..Created`, `.Order`), contains whitespace, or has `*` inside a literal segment
    /// (`Order.Cre*`).
    pub fn parse(pattern: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidPattern {
            pattern: pattern.to_owned(),
            reason: reason.to_owned(),
        };
        if pattern.is_empty() {
            return Err(invalid("a pattern must not be empty"));
        }
        if pattern.chars().any(char::is_whitespace) {
            return Err(invalid("a pattern must not contain whitespace"));
        }
        let mut segments = Vec::new();
        for segment in pattern.split('.') {
            segments.push(match segment {
                "" => return Err(invalid("empty segment (segments are separated by one `.`)")),
                "*" => Segment::One,
                "**" => Segment::Any,
                s if s.contains('*') => {
                    return Err(invalid(
                        "`*` and `**` must be whole segments (`Order.*`, not `Order.Cre*`)",
                    ))
                }
                s => Segment::Literal(s.to_owned()),
            });
        }
        let wildcard = segments.iter().any(|s| !matches!(s, Segment::Literal(_)));
        Ok(Pattern {
            source: pattern.to_owned(),
            segments,
            wildcard,
        })
    }

    /// A pattern matching exactly one event type, whatever characters its name holds.
    pub fn exact(event_type: &str) -> Self {
        Pattern {
            source: event_type.to_owned(),
            segments: event_type
                .split('.')
                .map(|s| Segment::Literal(s.to_owned()))
                .collect(),
            wildcard: false,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Its segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether it has a `*` or `**` segment (otherwise it matches one event type only).
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether `event_type` matches.
    pub fn matches(&self, event_type: &str) -> bool {
        if !self.wildcard {
            return self.source == event_type;
        }
        let names: Vec<&str> = event_type.split('.').collect();
        matches_segments(&self.segments, &names)
    }
}

/// Glob matching over segments, with backtracking to the last `**` only (linear in
/// practice, quadratic at worst).
fn matches_segments(pattern: &[Segment], names: &[&str]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where to resume after the last `**`: (pattern index after it, names index it took up to).
    let mut resume: Option<(usize, usize)> = None;
    while n < names.len() {
        match pattern.get(p) {
            Some(Segment::Any) => {
                resume = Some((p + 1, n));
                p += 1;
            }
            Some(Segment::One) => {
                p += 1;
                n += 1;
            }
            Some(Segment::Literal(lit)) if lit == names[n] => {
                p += 1;
                n += 1;
            }
            _ => match resume {
                // Let the last `**` swallow one more segment and try again.
                Some((after, taken)) => {
                    p = after;
                    n = taken + 1;
                    resume = Some((after, taken + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|s| *s == Segment::Any)
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Pattern {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Pattern::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(pattern: &str, event_type: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(event_type)
    }

    #[test]
    fn exact_patterns() {
        assert!(m("Payment.Failed", "Payment.Failed"));
        assert!(!m("Payment.Failed", "Payment.Failed.Twice"));
        assert!(!m("Payment.Failed", "Payment"));
        assert!(m("OrderCreated", "OrderCreated"));
        assert!(!m("OrderCreated", "OrderCreatedV2"));
    }

    #[test]
    fn one_segment_wildcard() {
        assert!(m("Order.*", "Order.Created"));
        assert!(m("Order.*", "Order.Shipped"));
        assert!(!m("Order.*", "Order"));
        assert!(
            !m("Order.*", "Order.Item.Added"),
            "unlike the article's regex"
        );
        assert!(!m("Order.*", "OrderX.Created"));
        assert!(!m("Order.*", "Orders"));
        assert!(m("*.Failed", "Payment.Failed"));
        assert!(!m("*.Failed", "Payment.Card.Failed"));
        assert!(!m("*.Failed", "Failed"));
        assert!(m("*", "OrderCreated"));
        assert!(!m("*", "Order.Created"));
        assert!(m("*.*", "Order.Created"));
    }

    #[test]
    fn any_segments_wildcard() {
        assert!(m("Order.**", "Order"));
        assert!(m("Order.**", "Order.Created"));
        assert!(m("Order.**", "Order.Item.Added"));
        assert!(!m("Order.**", "Orders.Created"));
        assert!(m("**", "anything.at.all"));
        assert!(m("**", "X"));
        assert!(m("**.Failed", "Failed"));
        assert!(m("**.Failed", "Payment.Card.Failed"));
        assert!(!m("**.Failed", "Payment.Failed.Again"));
        assert!(m("a.**.b", "a.b"));
        assert!(m("a.**.b", "a.x.y.b"));
        assert!(m("a.**.b.*", "a.b.x.b.c"));
        assert!(!m("a.**.b", "a.x.y.c"));
        assert!(m("**.x.**", "a.b.x.c"));
        assert!(m("a.**.**", "a"));
    }

    #[test]
    fn dots_and_odd_characters_in_names() {
        // Names may hold characters that are special elsewhere (`:`, `-`, `[`).
        assert!(m("billing:v2.*", "billing:v2.Charged"));
        assert!(m("Order-Service.[x]", "Order-Service.[x]"));
        // An empty segment in a name is still a segment.
        assert!(m("a.*.b", "a..b"));
        assert!(!m("a.b", "a..b"));
        // Exact patterns built from a type name take it literally, `*` included.
        let lit = Pattern::exact("weird*name");
        assert!(lit.matches("weird*name"));
        assert!(!lit.matches("weirdXname"));
        assert!(!lit.is_wildcard());
    }

    #[test]
    fn invalid_patterns_are_rejected_when_built() {
        for bad in [
            "",
            "Order..Created",
            ".Order",
            "Order.",
            "Order.Cre*",
            "***",
            "Order .*",
        ] {
            let err = Pattern::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidPattern { .. }),
                "{bad:?}: {err}"
            );
            assert!(!err.is_retryable());
        }
        let err = Pattern::parse("Order.Cre*").unwrap_err().to_string();
        assert!(err.contains("`Order.Cre*`"), "{err}");
        assert!("Order.*".parse::<Pattern>().is_ok());
    }
}
