//! The stylesheet and the script, compiled into the binary. Their paths
//! carry a hash of their content, so browsers may keep them for good.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// Where pages link them; bump the version when the files change.
pub const CSS_PATH: &str = "/ui/assets/ui-1.css";
pub const JS_PATH: &str = "/ui/assets/ui-1.js";

pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "ui-1.css" => (CSS, "text/css; charset=utf-8"),
        "ui-1.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
