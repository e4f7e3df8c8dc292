//! The web UI: HTML pages served by the binary beside the API, at Replicate's URLs
//! (`/{owner}/{name}`, `/{owner}/{name}/versions/{id}`, `/deployments/{owner}/{name}`, `/p/{id}`).
//!
//! Like `api/`, an adapter around `ops/`: every change goes through the same operations as the
//! API, so no rule lives in one entry point only, and neither adapter imports the other. Pages
//! work without JavaScript; `static/app.js` only adds live prediction status and
//! typed-confirmation hints.
mod account;
mod assets;
mod auth;
mod dashboard;
mod deployments;
mod error;
mod form;
mod models;
mod password;
mod playground;
mod predictions;
mod render;
mod schema;
mod session;
mod templates;
mod trash;
mod versions;

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

pub use password::hash_password;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard::home))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/static/{file}", get(assets::file))
        .route("/account", get(account::page))
        .route("/account/trash", get(trash::page))
        .route("/account/trash/restore", post(trash::restore))
        .route("/account/trash/purge", post(trash::purge))
        .route("/account/tokens", post(account::create_token))
        .route("/account/tokens/revoke", post(account::revoke_token))
        .route("/account/orgs/{org}/members", post(account::add_member))
        .route(
            "/account/orgs/{org}/members/remove",
            post(account::remove_member),
        )
        .route(
            "/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/deployments/{owner}/{name}",
            get(deployments::page).post(deployments::update),
        )
        .route(
            "/deployments/{owner}/{name}/delete",
            post(deployments::delete),
        )
        .route("/p/{id}", get(predictions::page))
        .route("/p/{id}/status", get(predictions::status))
        .route("/p/{id}/cancel", post(predictions::cancel))
        .route("/{owner}/{name}", get(models::overview))
        .route(
            "/{owner}/{name}/playground",
            get(playground::playground).post(playground::run),
        )
        .route("/{owner}/{name}/api", get(models::api_tab))
        .route("/{owner}/{name}/predictions", get(models::predictions_tab))
        .route("/{owner}/{name}/versions", get(versions::list))
        .route("/{owner}/{name}/versions/prune", post(trash::prune))
        .route("/{owner}/{name}/versions/{id}", get(versions::page))
        .route(
            "/{owner}/{name}/versions/{id}/delete",
            post(versions::delete),
        )
        .route(
            "/{owner}/{name}/settings",
            get(models::settings).post(models::save_settings),
        )
        .route("/{owner}/{name}/delete", post(models::delete))
        // The API's address space keeps its problem+json answers, even where a page's
        // pattern (such as `/{owner}/{name}`) would match.
        .route_layer(middleware::from_fn_with_state(state.clone(), form_origin))
        .route_layer(middleware::from_fn(api_space))
        .with_state(state)
}

fn is_api_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// Forms (every page POST, signing in included) must come from this site.
async fn form_origin(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !safe && !session::same_origin(&s, req.headers()) {
        return error::WebError::forbidden(
            "This form was sent from another site, so nothing was changed. Use the form on this \
             site.",
        )
        .into_response();
    }
    next.run(req).await
}

async fn api_space(req: Request, next: Next) -> Response {
    if is_api_path(req.uri().path()) {
        return ApiError::NotFound("There is nothing at this address.".into()).into_response();
    }
    next.run(req).await
}

/// Nothing at this address: problem+json in the API's space, an HTML page elsewhere.
pub async fn not_found(uri: Uri) -> Response {
    if is_api_path(uri.path()) {
        ApiError::NotFound("There is nothing at this address.".into()).into_response()
    } else {
        error::WebError::not_found().into_response()
    }
}
