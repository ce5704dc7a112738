//! The HTTP webhook sink: every alert in the outbox's webhook queue is
//! POSTed, oldest first and one at a time (so the receiver sees them in
//! order), as the same JSON the MQTT events topic carries. An alert leaves the
//! queue only when the server answered 2xx; a connection error, a timeout or
//! any other status keeps it and retries it (same `msg_id`) after a backoff
//! of 250 ms doubling to 5 s. Runs on a current-thread tokio runtime in its
//! own thread; one keep-alive HTTP/1.1 connection (hyper), TLS by rustls.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use crate::config::{Endpoint, WebhookConfig};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Queue};

/// Alerts read from the outbox per batch.
const BATCH: usize = 64;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Everything the webhook publisher needs.
pub struct Webhook {
    pub cfg: WebhookConfig,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    /// Woken by the sink on every new alert.
    pub notify: Arc<Notify>,
    pub stop: Arc<AtomicBool>,
}

/// Why one POST did not deliver.
enum Failure {
    /// The server answered, with this non-2xx status.
    Status(u16),
    /// No answer: connection, TLS or protocol error, or timeout.
    Transport(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "HTTP status {s}"),
            Failure::Transport(e) => f.write_str(e),
        }
    }
}

struct Client {
    endpoint: Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(cfg: &WebhookConfig) -> Result<Client, String> {
        let endpoint = cfg.endpoint().map_err(|e| e.to_string())?;
        let mut headers = Vec::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{k}: {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| format!("{k}: {e}"))?;
            headers.push((name, value));
        }
        let tls = if endpoint.tls {
            let c = crate::tls::client_config(cfg.ca_file.as_deref(), None)?;
            Some(tokio_rustls::TlsConnector::from(c))
        } else {
            None
        };
        Ok(Client {
            endpoint,
            headers,
            timeout: Duration::from_secs(cfg.timeout_s),
            tls,
            conn: None,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let e = &self.endpoint;
        let tcp = tokio::net::TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|err| format!("connect: {err}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(e.host.clone())
                    .map_err(|err| format!("TLS server name {:?}: {err}", e.host))?;
                Box::new(
                    tls.connect(name, tcp)
                        .await
                        .map_err(|err| format!("TLS: {err}"))?,
                )
            }
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|err| format!("HTTP handshake: {err}"))?;
        // The connection task ends when the server closes or `sender` drops.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// POSTs one alert; `Ok` only for a 2xx answer.
    async fn post(&mut self, body: Vec<u8>) -> Result<(), Failure> {
        match tokio::time::timeout(self.timeout, self.post_inner(body)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(Failure::Transport(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    async fn post_inner(&mut self, body: Vec<u8>) -> Result<(), Failure> {
        let body = Bytes::from(body);
        // A kept-alive connection the server has just closed fails the
        // request without an answer: then try once on a fresh connection.
        if self.conn.as_ref().is_some_and(|c| !c.is_closed()) {
            match self.send(body.clone()).await {
                Err(Failure::Transport(_)) => {}
                r => return r,
            }
        }
        self.conn = Some(self.connect().await.map_err(Failure::Transport)?);
        self.send(body).await
    }

    async fn send(&mut self, body: Bytes) -> Result<(), Failure> {
        let e = &self.endpoint;
        let mut req = Request::post(e.path.as_str())
            .header(HOST, e.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("strixd/", env!("CARGO_PKG_VERSION")));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|err| Failure::Transport(format!("request: {err}")))?;
        let Some(sender) = self.conn.as_mut() else {
            return Err(Failure::Transport("not connected".into()));
        };
        let sent = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            // Read the whole body so the connection can carry the next request.
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        match sent {
            Ok(s) if s.is_success() => Ok(()),
            Ok(s) => Err(Failure::Status(s.as_u16())),
            Err(err) => {
                self.conn = None;
                Err(Failure::Transport(format!("HTTP: {err}")))
            }
        }
    }
}

impl Webhook {
    /// Runs the publisher on a current-thread tokio runtime until `stop`.
    pub fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                crate::log_error!("strixd: webhook: cannot start tokio: {e}");
                return;
            }
        };
        rt.block_on(self.main_loop());
    }

    async fn main_loop(self) {
        let mut client = match Client::new(&self.cfg) {
            Ok(c) => c,
            Err(e) => {
                // The config was validated at start; this is a TLS file problem.
                crate::log_error!("strixd: webhook: {e}; alerts stay in the outbox");
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let url = &self.cfg.url;
        let mut backoff = Duration::from_millis(250);
        let mut failing = false;
        while !self.stop.load(Ordering::Relaxed) {
            let batch = match self.outbox.pending(Queue::Webhook, 0, BATCH) {
                Ok(b) => b,
                Err(e) => {
                    crate::log_error!("strixd: webhook: {e}");
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
            for (key, bytes) in batch {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                self.metrics.webhook_posts.fetch_add(1, Ordering::Relaxed);
                match client.post(bytes).await {
                    Ok(()) => {
                        if let Err(e) = self.outbox.remove(Queue::Webhook, &[key]) {
                            crate::log_error!("strixd: webhook: {e}");
                            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        self.metrics
                            .webhook_delivered
                            .fetch_add(1, Ordering::Relaxed);
                        if failing {
                            crate::log_info!("strixd: webhook {url}: delivering again");
                            failing = false;
                        }
                        backoff = Duration::from_millis(250);
                    }
                    Err(f) => {
                        self.metrics
                            .webhook_failures
                            .fetch_add(1, Ordering::Relaxed);
                        crate::log_warn!(
                            "strixd: webhook {url}: {f}; {} alert(s) kept, retrying in {backoff:?}",
                            self.outbox.queue_len(Queue::Webhook)
                        );
                        failing = true;
                        self.pause(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        // Start again from the oldest: order is kept.
                        break;
                    }
                }
            }
        }
    }

    /// Sleeps `d`, waking early on `stop`.
    async fn pause(&self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
