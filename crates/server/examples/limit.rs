//! The read benchmark's reference (`bench/read_path.py`): a bare axum server answering every
//! GET with the same bytes, served the way `modelyard serve` serves (axum 0.8 on tokio's
//! multi-threaded runtime, HTTP/1). What a handler could at best do on this machine.
//!
//! Usage: limit ADDR BODY_FILE. Prints the address it listens on, then serves until killed.
#![forbid(unsafe_code)]

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: limit ADDR BODY_FILE".into());
    };
    let body = axum::body::Bytes::from(std::fs::read(&file).map_err(|e| format!("{file}: {e}"))?);
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(CONTENT_TYPE, "application/json")], body).into_response() }
    });
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    println!("{}", listener.local_addr().map_err(|e| e.to_string())?);
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}
