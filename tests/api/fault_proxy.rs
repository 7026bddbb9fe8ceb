//! A fault proxy in front of the real Glance: requests pass through to it, except
//! those a rule matches, which get what a real server cannot produce on demand:
//! an error status, a connection dropped part-way through the request body, or a
//! request held for as long as the proxy lives. Every request that
//! reached the proxy is counted by method and path.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::helpers::Bed;

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// What a matched request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// This status, with a JSON body in Glance's shape; the request is not forwarded.
    Status(u16),
    /// Forwarded, but the connection is closed once this many body bytes passed.
    DropAfter(u64),
    /// Held, never forwarded, for as long as the proxy lives.
    Hold,
    /// Forwarded, and Glance's answer replaced by this status: the work was
    /// done, but the client hears a fault (as when Glance commits an image and
    /// then fails on its tags with "database is locked").
    AfterForward(u16),
}

/// A rule: the method, a text the path must contain, the fault, and how many
/// requests it still applies to.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: &'static str,
    pub fault: Fault,
    pub times: usize,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    /// (method, path) of every request that reached the proxy.
    seen: Vec<(String, String)>,
}

pub struct FaultProxy {
    /// Point a cloud's `image_endpoint_override` here.
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy to the bed's Glance (RegionOne).
    pub async fn start(rules: Vec<Rule>) -> FaultProxy {
        Self::start_to(&Bed::get().glance_url, rules).await
    }

    pub async fn start_to(target: &str, rules: Vec<Rule>) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            rules,
            seen: Vec::new(),
        }));
        let ctx = Arc::new(Ctx {
            target: target.trim_end_matches('/').to_string(),
            state: state.clone(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        });
        let task = tokio::spawn(accept_loop(listener, ctx));
        FaultProxy { url, state, task }
    }

    /// Adds a rule (checked before the older ones).
    pub fn add_rule(&self, rule: Rule) {
        self.state.lock().unwrap().rules.insert(0, rule);
    }

    /// How many requests with this method reached the proxy with a path holding `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .seen
            .iter()
            .filter(|(m, p)| m == method && p.contains(path_contains))
            .count()
    }
}

struct Ctx {
    target: String,
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
}

async fn accept_loop(listener: tokio::net::TcpListener, ctx: Arc<Ctx>) {
    while let Ok((stream, _)) = listener.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // A rule that drops the connection fires this; the connection's
            // future is then dropped, which closes the socket mid-request.
            let (kill, killed) = tokio::sync::mpsc::channel::<()>(1);
            let service = hyper::service::service_fn(move |req| {
                let (ctx, kill) = (ctx.clone(), kill.clone());
                async move { Ok::<_, Infallible>(handle(&ctx, req, kill).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let mut killed = killed;
            tokio::select! {
                _ = conn => {}
                _ = killed.recv() => {}
            }
        });
    }
}

fn matching(ctx: &Ctx, method: &str, path: &str) -> Option<Fault> {
    let mut state = ctx.state.lock().unwrap();
    state.seen.push((method.to_string(), path.to_string()));
    let rule = state
        .rules
        .iter_mut()
        .find(|r| r.times > 0 && r.method == method && path.contains(r.path_contains))?;
    rule.times -= 1;
    Some(rule.fault)
}

async fn handle(
    ctx: &Ctx,
    req: Request<Incoming>,
    kill: tokio::sync::mpsc::Sender<()>,
) -> Response<ProxyBody> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let drop_after = match matching(ctx, &method, &path) {
        Some(Fault::Status(status)) => return error(status),
        Some(Fault::Hold) => std::future::pending().await,
        Some(Fault::DropAfter(n)) => n,
        Some(Fault::AfterForward(status)) => {
            let answer = forward(ctx, req, u64::MAX, kill).await;
            // Glance's answer is read to its end (the work done), then replaced.
            let _ = answer.into_body().collect().await;
            return error(status);
        }
        None => u64::MAX,
    };
    forward(ctx, req, drop_after, kill).await
}

fn error(status: u16) -> Response<ProxyBody> {
    let body = format!(r#"{{"message": "fault proxy: injected {status}", "code": "{status}"}}"#);
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .unwrap()
}

async fn forward(
    ctx: &Ctx,
    req: Request<Incoming>,
    drop_after: u64,
    kill: tokio::sync::mpsc::Sender<()>,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let url = format!(
        "{}{}",
        ctx.target,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut passed = 0u64;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        passed += chunk.len() as u64;
        if passed >= drop_after {
            let _ = kill.try_send(());
            return Err(std::io::Error::other("fault proxy: connection dropped"));
        }
        Ok::<_, std::io::Error>(chunk)
    });
    let mut outbound = ctx
        .http
        .request(parts.method.clone(), url)
        .body(reqwest::Body::wrap_stream(stream));
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "connection" | "transfer-encoding") {
            outbound = outbound.header(name, value);
        }
    }
    let answer = match outbound.send().await {
        Ok(answer) => answer,
        Err(_) => return error(502),
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !matches!(name.as_str(), "connection" | "transfer-encoding") {
            response = response.header(name, value);
        }
    }
    let body = answer
        .bytes_stream()
        .map(|c| c.map(Frame::data).map_err(std::io::Error::other));
    response
        .body(BodyExt::boxed(StreamBody::new(body)))
        .unwrap()
}
