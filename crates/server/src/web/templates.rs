//! The templates (embedded in the binary), rendered as whole HTML responses with the headers
//! every page carries. Knows nothing of sessions, so error pages can use it too.
use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde_json::Value;

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
    "trash.html",
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
