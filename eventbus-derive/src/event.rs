//! Expansion of `#[event]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Field, GenericArgument, PathArguments, Type};

use crate::attr::parse_event_args;
use crate::check;
use crate::ctxt::Ctxt;
use crate::item::add_serde;

/// Expands `#[event(args)] item`.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let item: DeriveInput = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => {
            // Unions are not DeriveInput for us; anything else syn can't read is reported as is.
            return e.to_compile_error();
        }
    };
    if let Data::Union(u) = &item.data {
        cx.error_spanned_by(
            u.union_token,
            "an event must be a struct or an enum, not a union",
        );
    }
    let args = parse_event_args(&mut cx, args);
    let default_name = item.ident.to_string();
    let name = args
        .name
        .as_ref()
        .and_then(|lit| check::event_name(&mut cx, lit))
        .unwrap_or(default_name);
    let version = args
        .version
        .as_ref()
        .and_then(|lit| check::version(&mut cx, lit))
        .unwrap_or(1);

    let upcasters = upcasters(&mut cx, args.upcasters.as_ref(), version);
    let partition_key = args
        .partition_key
        .as_ref()
        .and_then(|name| check::partition_key_field(&mut cx, name, &item))
        .map(partition_key);
    let with_serde = add_serde(&item);
    let key_method = partition_key.as_ref().map(|k| &k.method);
    let items = quote!(#upcasters #key_method);
    let key_bound = partition_key.as_ref().map(|k| &k.bound);
    let event_impl = impl_event(&item, &name, version, items, key_bound);
    let errors = cx.finish().map(|e| e.to_compile_error());
    if matches!(item.data, Data::Union(_)) {
        // Serde can't derive for unions: emit the item untouched, with the error.
        return quote! { #errors #item };
    }
    quote! {
        #errors
        #with_serde
        #event_impl
    }
}

/// `const UPCASTERS: … = &[Upcaster::new(1, f1), …];`, or nothing.
fn upcasters(cx: &mut Ctxt, list: Option<&syn::ExprArray>, version: u32) -> TokenStream {
    let Some(list) = list else {
        return quote!();
    };
    if list.elems.len() >= version as usize {
        cx.error_spanned_by(
            list,
            format!(
                "{} upcasters for version {version}: the n-th upgrades version n to n + 1, so \
                 version {version} has at most {}",
                list.elems.len(),
                version - 1
            ),
        );
        return quote!();
    }
    let steps = list.elems.iter().zip(1u32..).map(|(f, from)| {
        quote! { ::eventbus_core::Upcaster::new(#from, #f) }
    });
    quote! {
        const UPCASTERS: &'static [::eventbus_core::Upcaster] = &[#(#steps),*];
    }
}

/// The partition key an event reads from one of its fields.
struct PartitionKey {
    /// `fn partition_key(&self)`, for the `impl Event`.
    method: TokenStream,
    /// `KeyType: ToString`, which a generic event needs in its where clause.
    bound: TokenStream,
}

/// Reads `field` with `ToString`: `Some(key)` always, or, for a field whose type is written
/// `Option<T>`, `Some(key)` when the field is `Some`.
fn partition_key(field: &Field) -> PartitionKey {
    let name = &field.ident;
    let inner = option_inner(&field.ty);
    let key_type = inner.unwrap_or(&field.ty);
    // Spanned on the field's type: a type without `Display` is reported there.
    let to_string = quote_spanned!(key_type.span()=> ::std::string::ToString::to_string);
    let key = match inner {
        Some(_) => quote! {
            ::core::option::Option::map(::core::option::Option::as_ref(&self.#name), #to_string)
        },
        None => quote!(::core::option::Option::Some(#to_string(&self.#name))),
    };
    PartitionKey {
        method: quote! {
            fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                #key
            }
        },
        bound: quote!(#key_type: ::std::string::ToString),
    }
}

/// `T` when `ty` is written `Option<T>` (by any path: `Option`, `std::option::Option`).
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(GenericArgument::Type(inner)) if last.ident == "Option" && args.args.len() == 1 => {
            Some(inner)
        }
        _ => None,
    }
}

/// `impl Event for Type` with the trait `items` given (constants, methods), inside an
/// anonymous const.
fn impl_event(
    item: &DeriveInput,
    name: &str,
    version: u32,
    items: TokenStream,
    key_bound: Option<&TokenStream>,
) -> TokenStream {
    let (ident, generics) = (&item.ident, &item.generics);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    // A generic event is an event for the parameters that make it serializable (and its
    // partition key displayable).
    let where_clause = if generics.params.is_empty() {
        quote!(#where_clause)
    } else {
        let key_bound = key_bound.map(|bound| quote!(, #bound));
        let bounds = quote! {
            Self: ::eventbus_core::__private::serde::Serialize
                + ::eventbus_core::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + ::core::marker::Sync
                + 'static
            #key_bound
        };
        match where_clause {
            Some(w) if !w.predicates.is_empty() => {
                let preds = &w.predicates;
                quote!(where #preds, #bounds)
            }
            _ => quote!(where #bounds),
        }
    };
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics ::eventbus_core::Event for #ident #ty_generics #where_clause {
                const EVENT_TYPE: &'static ::core::primitive::str = #name;
                const VERSION: ::core::primitive::u32 = #version;
                #items
            }
        };
    }
}
