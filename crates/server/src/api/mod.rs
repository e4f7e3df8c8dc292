//! The HTTP API under /v1. The route table below is the one source for the router and for the
//! test that holds the published OpenAPI document to it.
//! Like `web/`, an adapter around `ops/`: handlers parse the request, call one operation and
//! answer in Replicate's JSON. Neither adapter imports the other.
mod account;
mod audit;
mod deployments;
mod files;
mod jobs;
mod live;
mod models;
mod trash;
mod versions;

use axum::extract::Request;
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

macro_rules! api_routes {
    ($($method:ident $path:literal => $handler:expr,)*) => {
        /// Every (method, path) the API serves, in the OpenAPI document's spelling.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path),)* ("query", "/v1/models")];

        fn routes() -> Router<AppState> {
            Router::new()$(.route($path, $method($handler)))*
        }
    };
}

api_routes! {
    get "/v1/account" => account::get_account,
    get "/v1/account/storage" => trash::storage,
    get "/v1/trash" => trash::list,
    get "/v1/hardware" => account::hardware,
    get "/v1/models" => models::list,
    post "/v1/models" => models::create,
    get "/v1/models/{owner}/{name}" => models::get_model,
    patch "/v1/models/{owner}/{name}" => models::update,
    delete "/v1/models/{owner}/{name}" => models::delete_model,
    post "/v1/models/{owner}/{name}/restore" => trash::restore_model,
    get "/v1/models/{owner}/{name}/versions" => versions::list,
    post "/v1/models/{owner}/{name}/versions" => crate::push::push,
    post "/v1/models/{owner}/{name}/versions/prune" => trash::prune,
    get "/v1/models/{owner}/{name}/versions/{id}" => versions::get_version,
    delete "/v1/models/{owner}/{name}/versions/{id}" => versions::delete_version,
    get "/v1/models/{owner}/{name}/versions/{id}/build-log" => versions::build_log,
    post "/v1/models/{owner}/{name}/versions/{id}/restore" => trash::restore_version,
    post "/v1/models/{owner}/{name}/versions/{id}/trainings" => jobs::create_training,
    post "/v1/models/{owner}/{name}/predictions" => jobs::create_for_model,
    get "/v1/predictions" => jobs::list_predictions,
    post "/v1/predictions" => jobs::create_prediction,
    get "/v1/predictions/{id}" => jobs::get_prediction,
    post "/v1/predictions/{id}/cancel" => jobs::cancel_prediction,
    get "/v1/predictions/{id}/stream" => live::stream,
    get "/v1/trainings" => jobs::list_trainings,
    get "/v1/trainings/{id}" => jobs::get_training,
    post "/v1/trainings/{id}/cancel" => jobs::cancel_training,
    get "/v1/deployments" => deployments::list,
    post "/v1/deployments" => deployments::create,
    get "/v1/deployments/{owner}/{name}" => deployments::get_deployment,
    patch "/v1/deployments/{owner}/{name}" => deployments::update,
    delete "/v1/deployments/{owner}/{name}" => deployments::delete_deployment,
    post "/v1/deployments/{owner}/{name}/predictions" => jobs::create_for_deployment,
    get "/v1/audit-log" => audit::list,
    get "/v1/files" => files::list,
    post "/v1/files" => files::create,
    get "/v1/files/{id}" => files::get_file,
    delete "/v1/files/{id}" => files::delete_file,
    get "/v1/files/{id}/download" => files::download,
    get "/v1/webhooks/default/secret" => account::webhook_secret,
    get "/files/{job}/{token}/{name}" => live::file,
}

/// The API's routes; `fallback` answers any other address (the caller knows what else is
/// served there, such as the web UI's pages).
pub fn router<H, T>(state: AppState, fallback: H) -> Router
where
    H: Handler<T, AppState>,
    T: 'static,
{
    routes()
        .route("/openapi.json", get(openapi))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), query_method))
        .with_state(state)
}

/// The official clients search with `QUERY /v1/models`, a method the router cannot name.
async fn query_method(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method().as_str() == "QUERY" {
        if req.uri().path() == "/v1/models" {
            return models::search(state, req).await.into_response();
        }
        return ApiError::MethodNotAllowed.into_response();
    }
    let search_path = req.uri().path() == "/v1/models";
    let mut resp = next.run(req).await;
    if search_path && resp.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED {
        // This layer runs inside the route, before axum writes its Allow header (which could
        // not name QUERY anyway): write it from the route table, which does.
        let mut allow: Vec<String> = ROUTES
            .iter()
            .filter(|(_, p)| *p == "/v1/models")
            .map(|(m, _)| m.to_uppercase())
            .collect();
        if allow.iter().any(|m| m == "GET") {
            allow.push("HEAD".into());
        }
        if let Ok(v) = axum::http::HeaderValue::from_str(&allow.join(",")) {
            resp.headers_mut().insert(axum::http::header::ALLOW, v);
        }
    }
    resp
}

pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap_or_default();
    // The paths already start with /v1.
    doc["servers"] = serde_json::json!([{"url": s.url("")}]);
    axum::Json(doc).into_response()
}
