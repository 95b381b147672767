//! The agent's HTTP endpoint: `/livez`, `/readyz` and `/metrics` (Prometheus text).
//!
//! Plain HTTP/1 on a configurable address (127.0.0.1:9099 by default: health is for the local
//! supervisor and scraper, not the network).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::health::Health;
use crate::metrics::Metrics;

/// What the server reads.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

/// Binds `addr` (so a taken port fails the start, loudly) and returns the listener with the
/// address actually bound (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves requests until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, state: HttpState) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "health server cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "health connection ended with an error");
            }
        });
    }
}

fn respond(state: &HttpState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/livez" => verdict(state.health.liveness()),
        "/readyz" => verdict(state.health.readiness()),
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "try /livez, /readyz or /metrics\n".into()),
    }
}

fn verdict(result: Result<String, String>) -> Response<Full<Bytes>> {
    match result {
        Ok(body) => text(StatusCode::OK, body),
        Err(body) => text(StatusCode::SERVICE_UNAVAILABLE, body),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_health_and_metrics() {
        let state =
            HttpState { health: Arc::new(Health::new()), metrics: Arc::new(Metrics::default()) };
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let server = tokio::spawn(serve(listener, state.clone()));

        state.health.tick();
        assert!(get(addr, "/livez").await.starts_with("HTTP/1.1 200"));
        let ready = get(addr, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains("not in sync"), "{ready}");

        state.health.set_in_sync(true);
        state.health.set_etcd(Ok(()));
        state.health.set_apply_result(Ok(()));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));

        state.metrics.routes.set(7);
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains("tabby_agent_routes 7"), "{metrics}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
