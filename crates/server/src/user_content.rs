//! Serving bytes that users or models supplied (uploaded files, model outputs, build logs) so
//! that they can never run as this origin: an HTML page or an SVG uploaded by one account would
//! otherwise run its script with the session of whoever opens the link.
//!
//! Every such response gets `X-Content-Type-Options: nosniff` and a `Content-Security-Policy`
//! of `sandbox` (no script, no same-origin) and `frame-ancestors 'none'`. Only a short list of
//! inert types is served inline, with a content type this server writes; everything else is an
//! `application/octet-stream` attachment, whatever its uploader declared.
use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The policy on every user-supplied response.
pub const CSP: &str = "sandbox; frame-ancestors 'none'";

/// Types a browser shows without running anything, in this server's spelling.
const INERT: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
    "audio/wav",
    "audio/x-wav",
    "audio/mpeg",
    "audio/ogg",
    "audio/flac",
    "audio/webm",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "text/plain",
    "application/json",
];

/// The type and disposition a user-supplied file is served with: `(content type, inline)`.
pub fn served_type(declared: &str) -> (&'static str, bool) {
    let essence = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match INERT.iter().find(|t| **t == essence) {
        Some(&"text/plain") => ("text/plain; charset=utf-8", true),
        Some(t) => (t, true),
        None => ("application/octet-stream", false),
    }
}

/// The type a file name suggests, for outputs that come without one.
pub fn type_of_name(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" => "text/plain",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// `filename="..."` in plain ASCII (quotes, controls and non-ASCII replaced) and the exact name
/// as RFC 8187 `filename*`.
fn disposition(inline: bool, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact: String = url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!(
        "{}; filename=\"{ascii}\"; filename*=UTF-8''{exact}",
        if inline { "inline" } else { "attachment" }
    )
}

/// Adds the headers every user-supplied response carries.
pub fn harden(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
}

/// A user-supplied file, served so it cannot run as this origin.
pub fn file_response(body: Body, declared_type: &str, name: &str) -> Response {
    let (ctype, inline) = served_type(declared_type);
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&disposition(inline, name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    harden(&mut resp);
    resp
}

/// Stored bytes (a local file, or a stream from the object store), served as
/// [`file_response`] does, as the client takes them.
pub async fn content_response(
    content: modelyard_blobs::Content,
    declared_type: &str,
    name: &str,
) -> std::io::Result<Response> {
    match content {
        modelyard_blobs::Content::Local(path) => {
            stored_file_response(&path, declared_type, name).await
        }
        modelyard_blobs::Content::Stream { size, body } => {
            let mut resp = file_response(Body::from_stream(body), declared_type, name);
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            Ok(resp)
        }
    }
}

/// A stored file, served as [`file_response`] does, read from disk chunk by chunk as the client
/// takes it: a download costs a read buffer, whatever the file's size.
pub async fn stored_file_response(
    path: &std::path::Path,
    declared_type: &str,
    name: &str,
) -> std::io::Result<Response> {
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let mut resp = file_response(body, declared_type, name);
    // A stream has no length of its own; clients show progress and check completeness with it.
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inert_types_are_inline_and_types_are_rewritten() {
        for active in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/javascript",
            "text/plain\r\nx: y",
            "",
            "multipart/x-mixed-replace; boundary=x",
            "application/pdf",
        ] {
            assert_eq!(
                served_type(active),
                ("application/octet-stream", false),
                "{active:?}"
            );
        }
        assert_eq!(served_type("Image/PNG"), ("image/png", true));
        // Parameters are never passed on (a charset such as utf-7 changes how text is read).
        assert_eq!(
            served_type("text/plain; charset=utf-7"),
            ("text/plain; charset=utf-8", true)
        );
        assert_eq!(served_type("application/json"), ("application/json", true));
    }

    #[test]
    fn names_cannot_break_the_disposition_header() {
        let d = disposition(false, "a\"; filename=evil.html\r\n.txt");
        assert!(
            d.starts_with("attachment; filename=\"a__ filename_evil.html__.txt\"; "),
            "{d}"
        );
        assert!(HeaderValue::from_str(&d).is_ok());
        let d = disposition(true, "ünï.png");
        assert!(d.contains("filename*=UTF-8''%C3%BCn%C3%AF.png"), "{d}");
    }

    #[test]
    fn every_response_is_sandboxed_and_not_sniffed() {
        let r = file_response(Body::from("<script>"), "text/html", "x.html");
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(h[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment;"));
    }
}
