//! Collects errors so that every mistake is reported at once (serde_derive's `Ctxt`).

use std::fmt::Display;

use quote::ToTokens;

/// An error collector.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Option<syn::Error>,
}

impl Ctxt {
    /// Records an error at the tokens of `at`.
    pub(crate) fn error_spanned_by(&mut self, at: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(at.into_token_stream(), message));
    }

    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(all) => all.combine(error),
            None => self.errors = Some(error),
        }
    }

    /// The collected errors, if any.
    pub(crate) fn finish(self) -> Option<syn::Error> {
        self.errors
    }
}
