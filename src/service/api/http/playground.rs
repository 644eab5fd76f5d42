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
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use super::frame::{Answer, HttpApi};
use super::json::Empty;
use super::openapi::{AudioFile, CallHeaders, ServiceErrors};
use super::reply::{self, ErrorJson, Style};
use crate::service::error::ServiceError;
use crate::service::request::{catalog_files, catalog_gap};

type Api = State<Arc<HttpApi>>;

/// Where the page is.
const PAGE_PATH: &str = "/playground";

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

/// `/`: to the page.
#[utoipa::path(get, path = "/", operation_id = "root", tag = "playground",
    responses((status = 303, description = "To the playground page",
        headers(("location" = String, description = "/playground")))))]
pub(super) async fn root() -> Redirect {
    Redirect::to(PAGE_PATH)
}

/// The playground page (no token: the page asks for one and sends it to the API routes).
#[utoipa::path(get, path = "/playground", operation_id = "playground", tag = "playground",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
pub(super) async fn page() -> Response {
    file("")
}

/// One of the page's files.
#[utoipa::path(get, path = "/playground/{name}", operation_id = "playground_file", tag = "playground",
    params(("name" = String, Path, description = "app.js, gap.js or style.css")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "No such file", body = ErrorJson)
    ))]
pub(super) async fn asset(Path(name): Path<String>) -> Response {
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

/// A catalog's gap picture: its entries and their reverse-bridged embeddings in two principal
/// axes, with the frame to project a query into.
#[utoipa::path(get, path = "/v1/catalogs/{catalog}/gap", operation_id = "catalog_gap",
    tag = "playground", security(("bearer" = [])),
    params(CallHeaders, ("catalog" = String, Path, description = "A served catalog")),
    responses(
        (status = 200, description = "The picture", body = catalog_gap::GapView),
        ServiceErrors
    ))]
pub(super) async fn gap_route(
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
            Ok(Answer {
                json: json!(catalog_gap::GapView { files, ..view }),
                timings: None,
            })
        },
    )
    .await
}

/// The sound file of a catalog entry (a catalog built with `catalog build --audio-dir`).
#[utoipa::path(get, path = "/v1/catalogs/{catalog}/entries/{id}/audio", operation_id = "catalog_audio",
    tag = "playground", security(("bearer" = [])),
    params(CallHeaders, ("catalog" = String, Path, description = "A served catalog"),
        ("id" = String, Path, description = "One of its entries")),
    responses(
        (status = 200, description = "The file, byte for byte", content(
            (AudioFile = "audio/wav"), (AudioFile = "audio/flac"), (AudioFile = "audio/ogg"),
            (AudioFile = "audio/mpeg"))),
        ServiceErrors
    ))]
pub(super) async fn audio_route(
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
