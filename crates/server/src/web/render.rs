//! Pages: a template with the context every page shares (who is signed in, the CSRF token,
//! the flash message).
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::session::{self, Viewer};
use super::templates::html;
use crate::state::AppState;

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

/// Bytes as people read them: "0 B", "12.3 KB", "1.5 GB" (powers of 1000, as disks are sold).
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if n.abs() < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v.abs() < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_as_people_read_them() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(999), "999 B");
        assert_eq!(super::bytes(12_345), "12.3 KB");
        assert_eq!(super::bytes(1_500_000_000), "1.5 GB");
    }
}
