//! Templates (embedded in the binary) and the context every page shares.
use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde_json::{json, Value};

use super::session::{self, Viewer};
use crate::state::AppState;

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "base.html",
    "macros.html",
    "error.html",
    "login.html",
    "dashboard.html",
    "model.html",
    "overview.html",
    "playground.html",
    "api.html",
    "model_predictions.html",
    "versions.html",
    "version.html",
    "settings.html",
    "prediction.html",
    "deployments.html",
    "deployment.html",
    "account.html",
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                panic!("the template {name} does not parse: {e:#}");
            }
        }
        env.add_filter("ago", |t: String| ago(&t));
        env.add_filter("short", |s: String| s.chars().take(12).collect::<String>());
        env.add_filter("pretty", |v: minijinja::Value| {
            let v: Value = serde_json::to_value(&v).unwrap_or(Value::Null);
            serde_json::to_string_pretty(&v).unwrap_or_default()
        });
        env
    })
}

/// "3 minutes ago" for an RFC 3339 time; the exact time stays in the page's `title`.
fn ago(t: &str) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(t) else {
        return t.to_string();
    };
    let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
    let (n, unit) = match secs {
        0..=59 => return "just now".into(),
        60..=3599 => (secs / 60, "minute"),
        3600..=86399 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Renders a template as a whole HTML response.
pub fn html(name: &str, ctx: Value) -> Response {
    let rendered = env()
        .get_template(name)
        .and_then(|t| t.render(minijinja::Value::from_serialize(&ctx)));
    match rendered {
        Ok(body) => {
            let mut resp = Html(body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert("x-frame-options", HeaderValue::from_static("DENY"));
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' https: data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
                ),
            );
            resp
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), template = name, "a template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be drawn. It has been logged.",
            )
                .into_response()
        }
    }
}

/// A page with the shared context: who is signed in, the CSRF token for forms, the flash message.
pub fn page(s: &AppState, viewer: &Viewer, name: &str, title: &str, mut ctx: Value) -> Response {
    let base = json!({
        "title": title,
        "public_url": s.public_url.as_ref(),
        "viewer": viewer.session.as_ref().map(|v| json!({
            "username": v.caller.account.username,
            "name": v.caller.account.name,
        })),
        "csrf": viewer.session.as_ref().map(|v| v.csrf.clone()),
        "flash": viewer.flash,
        // Owners are told on every model page that its code runs unconfined.
        "models_unconfined": !s.sandbox.confined(),
    });
    if let (Value::Object(c), Value::Object(b)) = (&mut ctx, base) {
        for (k, v) in b {
            c.entry(k).or_insert(v);
        }
    }
    let mut resp = html(name, ctx);
    if viewer.flash.is_some() {
        session::clear_flash(s, &mut resp);
    }
    resp
}

/// A page answered with another status, such as 422 for a form to fix.
pub fn page_status(
    s: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    name: &str,
    title: &str,
    ctx: Value,
) -> Response {
    let mut resp = page(s, viewer, name, title, ctx);
    *resp.status_mut() = status;
    resp
}
