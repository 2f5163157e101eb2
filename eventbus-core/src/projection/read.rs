//! [`ReadModels`]: the handle query handlers read read models through.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::projection::ReadModelStore;

/// A cheap-to-clone handle on a [`ReadModelStore`], for query handlers and typed reads
/// (`OrderSummary::load(&models, "ord_1")`).
#[derive(Clone)]
pub struct ReadModels {
    store: Arc<dyn ReadModelStore>,
}

impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReadModels")
            .field(&self.store.describe())
            .finish()
    }
}

impl ReadModels {
    /// A handle on `store`.
    pub fn new(store: impl ReadModelStore) -> Self {
        ReadModels {
            store: Arc::new(store),
        }
    }

    /// A handle on a shared store.
    pub fn from_arc(store: Arc<dyn ReadModelStore>) -> Self {
        ReadModels { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ReadModelStore> {
        &self.store
    }

    /// Every field of a hash; `None` when it doesn't exist.
    pub async fn hash(&self, key: &str) -> Result<Option<BTreeMap<String, String>>> {
        self.store.hash(key).await
    }

    /// A range of a list: `..` for all, `0..10` for the first ten.
    pub async fn list(&self, key: &str, range: impl RangeBounds<usize>) -> Result<Vec<String>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s as i64,
            Bound::Excluded(&s) => s as i64 + 1,
            Bound::Unbounded => 0,
        };
        let stop = match range.end_bound() {
            Bound::Included(&e) => e as i64,
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&e) => e as i64 - 1,
            Bound::Unbounded => -1,
        };
        if stop >= 0 && stop < start {
            return Ok(Vec::new());
        }
        self.store.list(key, start, stop).await
    }

    /// Members of a set.
    pub async fn members(&self, key: &str) -> Result<BTreeSet<String>> {
        self.store.members(key).await
    }

    /// A counter's value (0 when it doesn't exist).
    pub async fn counter(&self, key: &str) -> Result<i64> {
        Ok(self.store.counter(key).await?.unwrap_or(0))
    }
}

/// A Rust type a read-model field is read back as (from the string Redis stores).
///
/// Implemented for `String`, integers, floats, `bool` and `Option<T>` (absent field:
/// `None`). Implement it for your own types to use them in `#[projection]` structs.
pub trait FieldValue: Sized {
    /// Parses the stored string.
    fn from_field(s: &str) -> std::result::Result<Self, String>;

    /// The value of a field the hash doesn't have; `None` makes it an error.
    fn absent() -> Option<Self> {
        None
    }
}

impl FieldValue for String {
    fn from_field(s: &str) -> std::result::Result<Self, String> {
        Ok(s.to_owned())
    }
}

impl FieldValue for bool {
    fn from_field(s: &str) -> std::result::Result<Self, String> {
        match s {
            "true" | "True" | "1" => Ok(true),
            "false" | "False" | "0" => Ok(false),
            _ => Err(format!("`{s}` is not a boolean")),
        }
    }
}

macro_rules! parsed_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn from_field(s: &str) -> std::result::Result<Self, String> {
                s.trim().parse().map_err(|e| format!("`{s}` is not a {}: {e}", stringify!($t)))
            }
        }
    )*};
}
parsed_field!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64);

impl<T: FieldValue> FieldValue for Option<T> {
    fn from_field(s: &str) -> std::result::Result<Self, String> {
        T::from_field(s).map(Some)
    }

    fn absent() -> Option<Self> {
        Some(None)
    }
}

/// Reads one field of a loaded hash as `T` (for code `#[projection]` generates).
#[doc(hidden)]
pub fn read_field<T: FieldValue>(
    hash: &BTreeMap<String, String>,
    key: &str,
    field: &str,
    default: Option<T>,
) -> Result<T> {
    let bad = |reason: String| Error::ReadModel {
        key: key.to_owned(),
        reason,
    };
    match hash.get(field) {
        Some(s) => T::from_field(s).map_err(|e| bad(format!("field `{field}`: {e}"))),
        None => default
            .or_else(T::absent)
            .ok_or_else(|| bad(format!("field `{field}` is missing"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_absent_fields_follow_the_type() {
        let mut h = BTreeMap::new();
        h.insert("total".to_owned(), "99.5".to_owned());
        h.insert("n".to_owned(), "x".to_owned());
        assert_eq!(read_field::<f64>(&h, "k", "total", None).unwrap(), 99.5);
        assert_eq!(
            read_field::<Option<f64>>(&h, "k", "gone", None).unwrap(),
            None
        );
        assert_eq!(read_field::<i64>(&h, "k", "gone", Some(0)).unwrap(), 0);
        let err = read_field::<String>(&h, "k", "gone", None).unwrap_err();
        assert!(err.to_string().contains("`gone` is missing"), "{err}");
        assert!(read_field::<i64>(&h, "k", "n", None).is_err());
    }
}
