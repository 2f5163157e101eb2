//! The page and the OpenAPI document, embedded in the binary: nothing is read from disk or
//! fetched from elsewhere at run time.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;

const INDEX: &str = include_str!("assets/index.html");
const STYLE: &str = include_str!("assets/style.css");
/// The scripts: the shell, then one per page.
const SCRIPTS: [(&str, &str); 6] = [
    ("app.js", include_str!("assets/app.js")),
    ("overview.js", include_str!("assets/overview.js")),
    ("dead_letters.js", include_str!("assets/dead_letters.js")),
    ("sagas.js", include_str!("assets/sagas.js")),
    ("projections.js", include_str!("assets/projections.js")),
    ("events.js", include_str!("assets/events.js")),
];
/// The OpenAPI 3 document of `/api/…`.
pub(crate) const OPENAPI: &str = include_str!("assets/openapi.json");

/// `GET /`: the page.
pub(crate) async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `GET /assets/{file}`: the page's script and style sheet.
pub(crate) async fn file(Path(file): Path<String>) -> Response {
    let script = SCRIPTS.iter().find(|(name, _)| *name == file);
    let (body, kind) = match script {
        Some((_, body)) => (*body, "text/javascript; charset=utf-8"),
        None if file == "style.css" => (STYLE, "text/css; charset=utf-8"),
        None => return ApiError::not_found(format!("no asset `{file}`")).into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// `GET /api/openapi.json`.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::server::api_routes;
    use serde_json::Value;

    /// Every API route the router serves is in the document with its method, and the
    /// document names no route the router lacks.
    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if method != "parameters" {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = api_routes()
            .into_iter()
            .map(|(method, path, _)| (method.to_string(), path.to_owned()))
            .collect();
        served.push(("GET".into(), "/api/openapi.json".into()));
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for (name, _) in SCRIPTS {
            assert!(INDEX.contains(&format!("/assets/{name}")), "{name}");
        }
        let scripts = SCRIPTS.iter().map(|(_, body)| *body);
        for asset in [INDEX, STYLE].into_iter().chain(scripts) {
            for outside in [
                "src=\"http",
                "href=\"http",
                "url(http",
                "fetch(\"http",
                "//cdn",
            ] {
                assert!(!asset.contains(outside), "{outside}");
            }
        }
    }
}
