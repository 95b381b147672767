//! The plugin sockets: HTTP/1 over two unix sockets, `POST /<Driver>.<Call>` with a JSON
//! body, answered with JSON (`{"Err": …}` and status 500 on refusal, as Docker expects).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::handlers::{Driver, DriverError};
use super::protocol::{Invalid, MAX_BODY};
use super::{socket_paths, Role, ServeError};

/// Removes the socket files when serving ends, however it ends (return, error, abort).
struct Sockets(Vec<PathBuf>);

impl Drop for Sockets {
    fn drop(&mut self) {
        for path in &self.0 {
            match std::fs::remove_file(path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed Docker plugin socket"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove socket");
                }
            }
        }
    }
}

/// Binds both sockets in `dir` and serves until `shutdown` turns true.
pub async fn run(
    dir: &Path,
    name: &str,
    driver: Arc<Driver>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| ServeError::Dir { dir: dir.to_owned(), source })?;
    let mut sockets = Sockets(Vec::new());
    let mut listeners = Vec::new();
    for (role, path) in socket_paths(dir, name) {
        // A socket file left by an agent that was killed would make bind fail.
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(ServeError::Bind { path, source: e });
            }
        }
        let listener = UnixListener::bind(&path)
            .map_err(|source| ServeError::Bind { path: path.clone(), source })?;
        tracing::info!(path = %path.display(), ?role, "serving the Docker plugin");
        sockets.0.push(path);
        listeners.push((role, listener));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (role, listener) in listeners {
        tasks.spawn(accept_loop(role, listener, driver.clone()));
    }
    crate::reconcile::stopped(&mut shutdown).await;
    tasks.abort_all();
    drop(sockets);
    Ok(())
}

async fn accept_loop(role: Role, listener: UnixListener, driver: Arc<Driver>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "Docker plugin socket cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let driver = driver.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let driver = driver.clone();
                async move { Ok::<_, Infallible>(respond(role, &driver, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Docker plugin connection ended with an error");
            }
        });
    }
}

async fn respond(role: Role, driver: &Driver, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return reply(Err(DriverError::from(Invalid::new("method", "plugin calls are POST"))));
    }
    let call = req.uri().path().trim_start_matches('/').to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return reply(Err(DriverError::from(Invalid::new(
                "body",
                format!("cannot read the request (at most {MAX_BODY} bytes): {e}"),
            ))))
        }
    };
    let started = std::time::Instant::now();
    let result = driver.handle(role, &call, &body).await;
    match &result {
        Ok(_) => tracing::info!(call, elapsed = ?started.elapsed(), "Docker plugin call"),
        Err(e) => tracing::warn!(call, error = %e, "Docker plugin call refused"),
    }
    reply(result)
}

/// 200 with the answer, or 500 (404 for an unknown call) with `{"Err": message}`.
pub fn reply(result: Result<serde_json::Value, DriverError>) -> Response<Full<Bytes>> {
    let (status, body) = match result {
        Ok(value) => (StatusCode::OK, value),
        Err(e) => {
            let status = if matches!(e, DriverError::UnknownCall { .. }) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, serde_json::json!({ "Err": e.to_string() }))
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(super::CONTENT_TYPE));
    response
}
