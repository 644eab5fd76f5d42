//! The playground: a page that ranks a catalog for a typed text or a dropped sound, plays the
//! ranked entries and draws the catalog's gap picture (docs/playground.md). Its files are
//! embedded in the binary and served without a token; the page sends the token the user
//! types to the API routes, as any client does. Two API routes exist for it:
//!
//! | route | answers |
//! |---|---|
//! | `GET /v1/catalogs/{catalog}/gap` | the catalog's gap picture ([`catalog_gap`]) as JSON |
//! | `GET /v1/catalogs/{catalog}/entries/{id}/audio` | the entry's audio file ([`catalog_files`]) |

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use super::frame::{Answer, HttpApi};
use super::json::Empty;
use super::reply::{self, Style};
use crate::service::error::ServiceError;
use crate::service::request::{catalog_files, catalog_gap};

type Api = State<Arc<HttpApi>>;

/// Where the page is.
pub const PAGE_PATH: &str = "/playground";

/// The page's files: (name under [`PAGE_PATH`], media type, content).
const FILES: [(&str, &str, &str); 4] = [
    (
        "",
        "text/html; charset=utf-8",
        include_str!("playground/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("playground/app.js"),
    ),
    (
        "gap.js",
        "text/javascript; charset=utf-8",
        include_str!("playground/gap.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("playground/style.css"),
    ),
];

/// The page fetches nothing but its own files and the API, and plays what it fetched.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; media-src blob:; img-src data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

pub fn routes() -> Router<Arc<HttpApi>> {
    Router::new()
        .route("/", get(|| async { Redirect::to(PAGE_PATH) }))
        .route(PAGE_PATH, get(|| async { file("") }))
        .route("/playground/{name}", get(asset))
        .route("/v1/catalogs/{catalog}/gap", get(gap_route))
        .route(
            "/v1/catalogs/{catalog}/entries/{id}/audio",
            get(audio_route),
        )
}

async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

fn file(name: &str) -> Response {
    let Some((_, media, text)) = FILES.iter().find(|(n, ..)| *n == name) else {
        let message = format!("no playground file {:?}", crate::service::echo::echo(name));
        return reply::plain(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": "not_found", "message": message}}),
        );
    };
    let mut r = Response::new(Body::from(*text));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if name.is_empty() {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_POLICY),
        );
    }
    r
}

/// A path whose parts are not UTF-8 once percent-decoded.
fn bad_path(e: PathRejection) -> ServiceError {
    ServiceError::invalid("path", e.body_text())
}

async fn gap_route(
    State(api): Api,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let ctx = api.ctx();
    api.call(
        ("http:/v1/catalogs/{catalog}/gap", Style::Service),
        request,
        |_: &Empty| (0, ""),
        |_, _| async move {
            let Path(name) = path.map_err(bad_path)?;
            let c = catalog_files::find(&*ctx.repo.get()?, &name)?;
            let files = catalog_files::has_files(&c);
            let view = tokio::task::spawn_blocking(move || catalog_gap::gap_view(&c))
                .await
                .map_err(|e| ServiceError::Internal(format!("the gap picture: {e}")))??;
            let mut json = json!(view);
            // Whether the audio route plays its entries.
            json["files"] = json!(files);
            Ok(Answer {
                json,
                timings: None,
            })
        },
    )
    .await
}

async fn audio_route(
    State(api): Api,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let ctx = api.ctx();
    api.call_get(
        "http:/v1/catalogs/{catalog}/entries/{id}/audio",
        request,
        || async move {
            let Path((name, id)) = path.map_err(bad_path)?;
            let c = catalog_files::find(&*ctx.repo.get()?, &name)?;
            let entry = catalog_files::entry_file(&c, &id)?;
            let bytes = catalog_files::read(&entry).await?;
            let mut r = Response::new(Body::from(bytes));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(entry.content_type),
            );
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
            Ok(r)
        },
    )
    .await
}
