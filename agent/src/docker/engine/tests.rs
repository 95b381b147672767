//! Unit tests of the Engine API client: answer parsing, and real exchanges with a fake
//! Docker served on a unix socket made by the test.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::Response;
use serde_json::json;
use tokio::net::UnixListener;

use super::*;

const NET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn net() -> ObjectId {
    ObjectId::parse("NetworkID", NET).unwrap()
}

fn answer(value: &serde_json::Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[test]
fn an_inspect_answer_gives_the_name() {
    // Trimmed from a real `GET /networks/<id>` of dockerd 20.10.
    let body = answer(&json!({
        "Name": "web", "Id": NET, "Created": "2024-01-01T00:00:00Z", "Scope": "local",
        "Driver": "tabby", "EnableIPv6": false,
        "IPAM": {"Driver": "tabby-ipam", "Options": {}, "Config": [{"Subnet": "192.168.22.0/24"}]},
        "Internal": false, "Attachable": false, "Containers": {}, "Options": {},
        "Labels": {"com.example.team": "a"}
    }));
    assert_eq!(parse_network(&net(), &body).unwrap(), NetworkInfo { name: "web".into() });
}

#[test]
fn bad_answers_are_clear_errors() {
    let err = parse_network(&net(), b"{\"Name\": ").unwrap_err();
    assert!(matches!(err, EngineError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains(NET), "{err}");

    let err = parse_network(&net(), &answer(&json!({"Id": NET}))).unwrap_err();
    assert!(matches!(err, EngineError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("Name"), "{err}");

    let err = parse_network(&net(), &answer(&json!({"Id": NET, "Name": 7}))).unwrap_err();
    assert!(err.to_string().contains("Name"), "{err}");

    let other = "f".repeat(64);
    let err = parse_network(&net(), &answer(&json!({"Id": other, "Name": "web"}))).unwrap_err();
    assert!(err.to_string().contains("instead"), "{err}");

    for bad in ["My_Net", "UPPER", ""] {
        let err = parse_network(&net(), &answer(&json!({"Id": NET, "Name": bad}))).unwrap_err();
        assert!(matches!(&err, EngineError::InvalidName { name, .. } if name == bad), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("cannot name a tabby profile"), "{text}");
        assert!(text.contains("-o network="), "{text}");
        assert!(!err.is_retryable());
    }
}

/// A fake dockerd: answers `GET /networks/<NET>` with `web`, anything else 404 as Docker
/// does, and records each request's path and `Host`.
struct FakeDocker {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDocker {
    fn start(answering: bool) -> FakeDocker {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                if !answering {
                    // Accepts and never answers: a hung daemon.
                    held.push(stream);
                    continue;
                }
                let log = log.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let host = req.headers().get(HOST).map_or_else(String::new, |h| {
                            h.to_str().unwrap_or_default().to_owned()
                        });
                        let path = req.uri().path().to_owned();
                        log.lock().unwrap().push((path.clone(), host));
                        let (status, body) = if path == format!("/networks/{NET}") {
                            (200, json!({"Name": "web", "Id": NET, "Labels": {}}))
                        } else {
                            let id = path.trim_start_matches("/networks/");
                            (404, json!({"message": format!("network {id} not found")}))
                        };
                        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeDocker { _dir: dir, socket, seen, task }
    }
}

#[tokio::test]
async fn asks_docker_over_its_socket() {
    let docker = FakeDocker::start(true);
    let engine = Engine::new(&docker.socket, Duration::from_secs(5));
    assert_eq!(engine.network(&net()).await.unwrap().name, "web");
    assert_eq!(
        docker.seen.lock().unwrap().as_slice(),
        [(format!("/networks/{NET}"), "docker".to_owned())]
    );

    let unknown = ObjectId::parse("NetworkID", &"e".repeat(64)).unwrap();
    let err = engine.network(&unknown).await.unwrap_err();
    assert!(matches!(err, EngineError::Status { status: 404, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&docker.socket.display().to_string()), "{text}");
    assert!(text.contains(&"e".repeat(64)) && text.contains("not found"), "{text}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn no_docker_is_a_retryable_error_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let err = Engine::new(&socket, Duration::from_secs(5)).network(&net()).await.unwrap_err();
    assert!(matches!(err, EngineError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&socket.display().to_string()), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_hung_docker_is_bounded_by_the_timeout() {
    let docker = FakeDocker::start(false);
    let engine = Engine::new(&docker.socket, Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = engine.network(&net()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(matches!(err, EngineError::Timeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&docker.socket.display().to_string()) && text.contains(NET), "{text}");
    assert!(err.is_retryable());
}
