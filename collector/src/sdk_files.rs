//! `/sdk/`: the built browser SDK (`--sdk-dir`), and nothing else from the disk.
//!
//! Served: regular files whose real location (after following symlinks) is inside
//! the folder. Refused with 404: any path segment starting with `.` (dotfiles, `..`),
//! symlinks leading out of the folder or to a dotfile, directories (no listing, no
//! `index.html`), and anything that is not a regular file (sockets, FIFOs, devices).

use std::path::{Component, Path, PathBuf};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::app::AppState;
use crate::error::ApiError;

/// The real path of the file `/sdk/{rel}` names, if it may be served.
pub async fn resolve(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    for segment in rel.split('/') {
        if segment.is_empty() || segment.starts_with('.') || segment.contains(['\\', '\0']) {
            return None;
        }
        path.push(segment);
    }
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let real = tokio::fs::canonicalize(&path).await.ok()?;
    let inside = real.strip_prefix(&root).ok()?;
    let hidden = inside.components().any(|c| match c {
        Component::Normal(name) => name.as_encoded_bytes().starts_with(b"."),
        _ => true,
    });
    if hidden {
        return None;
    }
    tokio::fs::metadata(&real).await.ok()?.is_file().then_some(real)
}

/// `GET|HEAD /sdk/{*path}`: the file, with its content type, `ETag`-free but
/// `Last-Modified` and range support from `ServeFile`.
pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let Some(dir) = state.sdk_dir.as_deref() else {
        return ApiError::NotFound.into_response();
    };
    // The raw path, percent-decoded here (so `%2e%2e` and `%2f` are judged decoded).
    let Some(rel) = req.uri().path().strip_prefix("/sdk/") else {
        return ApiError::NotFound.into_response();
    };
    let Ok(rel) = percent_encoding::percent_decode_str(rel).decode_utf8() else {
        return ApiError::NotFound.into_response();
    };
    match resolve(dir, &rel).await {
        Some(file) => match ServeFile::new(file).oneshot(req).await {
            Ok(res) => res.into_response(),
            Err(never) => match never {},
        },
        None => ApiError::NotFound.into_response(),
    }
}
