//! A fault-injecting HTTP proxy between the tool and Garage: it answers
//! chosen requests with 500/503 SlowDown, drops connections, stalls, or
//! corrupts response bodies, and forwards the rest untouched (the SigV4
//! signature covers the Host header, which is forwarded as sent).
//!
//! One request per connection: every response says `Connection: close`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::amqp::rt;

/// What to do to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and S3 error code.
    Status(u16, &'static str),
    /// Close the connection without answering.
    Drop,
    /// Forward, but cut the response body in half.
    Truncate,
    /// Forward, but flip bits in the response body.
    Corrupt,
    /// Hold the request this long, then close without answering.
    Stall(Duration),
    /// Forward, but remove the `x-amz-checksum-*` response headers: a
    /// server that keeps no checksums.
    StripChecksums,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone)]
pub struct Rule {
    /// HTTP method, or any.
    pub method: Option<&'static str>,
    /// Substring of the request target (path and query), or any.
    pub target: Option<String>,
    /// Apply to every n-th matching request (1 = all).
    pub every: u32,
    /// Stop after this many faults (None = no limit).
    pub limit: Option<u32>,
    /// The fault.
    pub fault: Fault,
}

impl Rule {
    /// A fault on every n-th request with `method`.
    pub fn every(method: &'static str, every: u32, fault: Fault) -> Rule {
        Rule {
            method: Some(method),
            target: None,
            every,
            limit: None,
            fault,
        }
    }
}

#[derive(Default)]
struct State {
    rules: Vec<(Rule, u32, u32)>,
}

/// A running proxy.
pub struct FaultProxy {
    /// Its port.
    pub port: u16,
    state: Arc<Mutex<State>>,
    injected: Arc<AtomicU32>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream_port` on 127.0.0.1.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = rt().block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let injected = Arc::new(AtomicU32::new(0));
        let (s, i) = (state.clone(), injected.clone());
        rt().spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (s, i) = (s.clone(), i.clone());
                tokio::spawn(async move {
                    let _ = handle(client, upstream_port, s, i).await;
                });
            }
        });
        FaultProxy {
            port,
            state,
            injected,
        }
    }

    /// Replaces the rules (counters start again).
    pub fn set(&self, rules: Vec<Rule>) {
        self.state.lock().unwrap().rules = rules.into_iter().map(|r| (r, 0, 0)).collect();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u32 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The endpoint URL clients use.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn decide(state: &Mutex<State>, method: &str, target: &str) -> Option<Fault> {
    let mut state = state.lock().unwrap();
    for (rule, seen, applied) in state.rules.iter_mut() {
        let matches = rule.method.is_none_or(|m| m == method)
            && rule
                .target
                .as_ref()
                .is_none_or(|t| target.contains(t.as_str()));
        if !matches {
            continue;
        }
        *seen += 1;
        if rule.limit.is_some_and(|l| *applied >= l) || *seen % rule.every != 0 {
            continue;
        }
        *applied += 1;
        return Some(rule.fault);
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn handle(
    mut client: TcpStream,
    upstream_port: u16,
    state: Arc<Mutex<State>>,
    injected: Arc<AtomicU32>,
) -> std::io::Result<()> {
    // The request head.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut tmp = [0u8; 8192];
        let n = client.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    let mut expect_continue = false;
    let mut forwarded = format!("{request_line}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("expect:") {
            expect_continue = lower.contains("100-continue");
            continue;
        }
        if lower.starts_with("connection:") {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    if expect_continue {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut tmp = vec![0u8; 1 << 16];
        let n = client.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let fault = decide(&state, &method, &target);
    if fault.is_some() {
        injected.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        Some(Fault::Status(status, code)) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
            );
            let reason = if status == 503 {
                "Slow Down"
            } else {
                "Internal Server Error"
            };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
            client.write_all(response.as_bytes()).await?;
            return client.shutdown().await;
        }
        Some(Fault::Drop) => return Ok(()),
        Some(Fault::Stall(d)) => {
            tokio::time::sleep(d).await;
            return Ok(());
        }
        _ => {}
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    upstream.write_all(forwarded.as_bytes()).await?;
    upstream.write_all(&body).await?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).await?;
    let body_start = find(&response, b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(response.len());
    let ok = response.starts_with(b"HTTP/1.1 200");
    match fault {
        Some(Fault::Truncate) if ok && response.len() > body_start + 2 => {
            let cut = body_start + (response.len() - body_start) / 2;
            client.write_all(&response[..cut]).await?;
            return Ok(());
        }
        Some(Fault::Corrupt) if ok && response.len() > body_start + 64 => {
            for b in response[body_start..body_start + 64].iter_mut() {
                *b ^= 0x5a;
            }
        }
        Some(Fault::StripChecksums) => {
            let head = String::from_utf8_lossy(&response[..body_start]).to_string();
            let kept: String = head
                .split_inclusive("\r\n")
                .filter(|line| !line.to_ascii_lowercase().starts_with("x-amz-checksum-"))
                .collect();
            response.splice(..body_start, kept.into_bytes());
        }
        _ => {}
    }
    client.write_all(&response).await?;
    client.shutdown().await
}
