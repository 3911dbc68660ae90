//! A small echo upstream for the demo: answers every request with a JSON description of
//! what reached it (method, path, query, headers, body size), so a demo user can see what
//! the gateway forwarded and which headers its policy added or removed.

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use sha2::{Digest, Sha256};

/// Largest body the echo reads.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct EchoApp;

#[async_trait]
impl ServeHttp for EchoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let mut headers = serde_json::Map::new();
        for (name, value) in &req.headers {
            headers.insert(
                name.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            );
        }
        let (method, path, query) = (
            req.method.to_string(),
            req.uri.path().to_owned(),
            req.uri.query().map(str::to_owned),
        );
        let mut hasher = Sha256::new();
        let mut size = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            size += chunk.len();
            hasher.update(&chunk);
            if size > MAX_BODY {
                break;
            }
        }
        let body = serde_json::json!({
            "echo": true,
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "body_bytes": size,
            "body_sha256": hex::encode(hasher.finalize()),
        });
        let mut resp = crate::admin::sized(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec_pretty(&body).unwrap_or_default(),
        );
        resp.headers_mut().insert(
            header::SERVER,
            header::HeaderValue::from_static("portcullis-echo"),
        );
        resp
    }
}
