//! The console's safety checks, in front of every route:
//!
//! - on a loopback address, only requests naming a loopback host (`127.0.0.1`, `localhost`,
//!   `[::1]`) and the console's port are served, so that a web page can't reach the console
//!   through a DNS name it rebinds to 127.0.0.1;
//! - anything but `GET`/`HEAD` is a write: refused unless the console allows writes, refused
//!   from another site (`Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin`
//!   other than the console's own), and refused without `Authorization: Bearer {token}` (a
//!   header a cross-site form can't send);
//! - after a write that passed, the polled pages read afresh ([`AppState::written`]), so that
//!   they show what it did;
//! - every response forbids framing and sniffing and allows only the console's own scripts.

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use super::state::AppState;

/// The page's content security policy: its own scripts, styles and images only.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Runs the checks, then the route; adds the security headers to whatever comes back.
pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = match refusal(&state, request.method(), request.headers()) {
        Some(refused) => refused.into_response(),
        None => {
            let write = is_write(request.method());
            let response = next.run(request).await;
            if write {
                state.written();
            }
            response
        }
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Anything but `GET`/`HEAD` is a write.
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// Why a request is refused, if it is.
fn refusal(state: &AppState, method: &Method, headers: &HeaderMap) -> Option<ApiError> {
    let host = text(headers, header::HOST);
    if state.addr.ip().is_loopback() && !host.is_some_and(|h| loopback_host(h, state.addr.port())) {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "the console answers only requests for a loopback host (127.0.0.1, localhost)",
        ));
    }
    if !is_write(method) {
        return None;
    }
    let Some(token) = state.settings.token.as_deref() else {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "read-only console: start it with --allow-writes to replay or purge",
        ));
    };
    if let Some(site) = text(headers, "sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Some(cross_site());
        }
    }
    if let Some(origin) = text(headers, header::ORIGIN) {
        if host.is_none_or(|host| origin != format!("http://{host}")) {
            return Some(cross_site());
        }
    }
    let given = text(headers, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes())) {
        return Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "writes need the console's token: Authorization: Bearer TOKEN",
        ));
    }
    None
}

fn cross_site() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "cross-site write refused")
}

fn text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a `Host` header names a loopback host with the console's port.
fn loopback_host(host: &str, port: u16) -> bool {
    let Some((name, given)) = host.rsplit_once(':') else {
        return false;
    };
    given == port.to_string() && matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_with_the_port_pass() {
        assert!(loopback_host("127.0.0.1:7474", 7474));
        assert!(loopback_host("localhost:7474", 7474));
        assert!(loopback_host("[::1]:7474", 7474));
        assert!(!loopback_host("evil.example:7474", 7474));
        assert!(!loopback_host("127.0.0.1:80", 7474));
        assert!(!loopback_host("127.0.0.1", 7474));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
