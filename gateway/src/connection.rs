//! Guards on client connections: how many a client may hold, and how long it may take to
//! send a request.
//!
//! Pingora times each read of a request head separately (so a client that sends a byte every
//! few seconds is never cut off), answers nothing when it gives up on one, has no minimum
//! rate for bodies and no connection cap. `proxy::GuardedProxy` sits between the listener and
//! Pingora's HTTP proxy: it counts connections (globally and per client address, refusing
//! past the caps with a problem answer), and wraps each accepted stream in a
//! [`GuardedStream`] whose reads run against phase deadlines:
//!
//! - waiting for a request: `idle_timeout`, then the connection is closed quietly;
//! - reading a request head: `header_timeout` in total from its first byte, and at most
//!   `max_header_bytes`, answered `408` / `431` as problem+json;
//! - reading a request body: `body_timeout` plus one second per `body_min_rate` bytes
//!   received (Apache's `mod_reqtimeout` rule), reported to the proxy, which answers `408`;
//! - while the upstream works and the response goes out: no deadline of ours.
//!
//! The proxy's hooks move a connection between phases through its [`ConnectionControl`].

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use portcullis_assertions::Rejection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::runtime::ClientLimits;

/// Where a connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for the next request.
    Idle = 0,
    /// Reading a request head.
    Head = 1,
    /// Reading a request body.
    Body = 2,
    /// The request is in; the upstream and the response take their time.
    Open = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            1 => Phase::Head,
            2 => Phase::Body,
            3 => Phase::Open,
            _ => Phase::Idle,
        }
    }
}

/// The proxy's handle on its connection's phase.
#[derive(Debug, Default)]
pub struct ConnectionControl {
    phase: AtomicU8,
    /// Set when a body deadline passed, so the proxy answers `408` rather than failing.
    body_timed_out: AtomicU8,
}

impl ConnectionControl {
    /// The head is in: the body (if any) is next.
    pub fn head_read(&self, has_body: bool) {
        let next = if has_body { Phase::Body } else { Phase::Open };
        self.phase.store(next as u8, Ordering::Release);
    }

    /// The whole body is in.
    pub fn body_read(&self) {
        self.phase.store(Phase::Open as u8, Ordering::Release);
    }

    /// The response is out: the next request may come.
    pub fn response_sent(&self) {
        self.phase.store(Phase::Idle as u8, Ordering::Release);
    }

    /// True when the body of the current request was cut off for being too slow.
    #[must_use]
    pub fn body_timed_out(&self) -> bool {
        self.body_timed_out.load(Ordering::Acquire) != 0
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }
}

/// Finds the control of the connection a request came on.
#[must_use]
pub fn control_of(session: &pingora::proxy::Session) -> Option<Arc<ConnectionControl>> {
    let stream = session.as_downstream().stream()?;
    stream
        .as_any()
        .downcast_ref::<GuardedStream>()
        .map(|guarded| guarded.control.clone())
}

/// Open connections, in all and per client address.
#[derive(Debug)]
pub struct ConnectionCounts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The same total, as a metric.
    gauge: prometheus::IntGauge,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyFromClient,
}

impl Refusal {
    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "max_connections",
            Refusal::TooManyFromClient => "max_connections_per_ip",
        }
    }

    /// The refusal as a problem answer (`503`/`429`, `Retry-After: 1`); an HTTP/2 stream
    /// past a cap is answered with it.
    #[must_use]
    pub fn rejection(self) -> Rejection {
        let (status, detail) = match self {
            Refusal::TooManyConnections => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway holds as many connections as it accepts",
            ),
            Refusal::TooManyFromClient => (
                StatusCode::TOO_MANY_REQUESTS,
                "this client address holds as many connections as it may",
            ),
        };
        Rejection::new(status, "too-many-connections", detail).with_header(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        )
    }

    /// The refusal as written on the connection before it closes.
    #[must_use]
    pub fn answer(self) -> &'static [u8] {
        match self {
            Refusal::TooManyConnections => &CANNED.too_many_connections,
            Refusal::TooManyFromClient => &CANNED.too_many_from_client,
        }
    }
}

/// A counted connection; dropping it releases the count.
#[derive(Debug)]
pub struct Permit {
    counts: Arc<ConnectionCounts>,
    client: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        self.counts.gauge.dec();
        if let Some(client) = self.client {
            let mut per_ip = self
                .counts
                .per_ip
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = per_ip.get_mut(&client) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&client);
                }
            }
        }
    }
}

impl ConnectionCounts {
    #[must_use]
    pub fn new(gauge: prometheus::IntGauge) -> Self {
        ConnectionCounts {
            total: AtomicUsize::new(0),
            per_ip: Mutex::default(),
            gauge,
        }
    }

    /// Counts a new connection from `client` (`None`: not counted per address), or says why
    /// it is one too many.
    ///
    /// # Errors
    /// The cap that was reached.
    pub fn admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        limits: &ClientLimits,
    ) -> Result<Permit, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyConnections);
        }
        if let Some(ip) = client {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= limits.max_connections_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::TooManyFromClient);
            }
            *count += 1;
        }
        self.gauge.inc();
        Ok(Permit {
            counts: self.clone(),
            client,
        })
    }

    /// Counts a connection, or an HTTP/2 stream, from `peer` against the policy's caps. A
    /// trusted proxy's connections carry many clients, so they are not counted per address;
    /// a refusal is counted in the metrics.
    ///
    /// # Errors
    /// The cap that was reached.
    pub fn admit_peer(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        runtime: &crate::runtime::Runtime,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Permit, Refusal> {
        let client = peer.filter(|ip| !runtime.trusted_proxies.contains(*ip));
        self.admit(client, &runtime.client_limits)
            .inspect_err(|refusal| {
                metrics.connection_refused(refusal.label());
            })
    }

    /// Open connections now.
    #[must_use]
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// First allocation for a request head; most heads fit (nginx uses 1 KiB the same way).
const FIRST_READ: usize = 1024;

/// The guards' own refusals, rendered once by the one refusal renderer.
struct CannedAnswers {
    head_timeout: Vec<u8>,
    head_too_large: Vec<u8>,
    too_many_connections: Vec<u8>,
    too_many_from_client: Vec<u8>,
}

static CANNED: LazyLock<CannedAnswers> = LazyLock::new(|| {
    let render = |status, code, detail: &'static str| {
        crate::problem::render(&Rejection::new(status, code, detail)).to_closing_http1()
    };
    let retry_soon =
        |refusal: Refusal| crate::problem::render(&refusal.rejection()).to_closing_http1();
    CannedAnswers {
        head_timeout: render(
            StatusCode::REQUEST_TIMEOUT,
            "client-timeout",
            "the request head was not received in time",
        ),
        head_too_large: render(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "head-too-large",
            "the request head is larger than the gateway accepts",
        ),
        too_many_connections: retry_soon(Refusal::TooManyConnections),
        too_many_from_client: retry_soon(Refusal::TooManyFromClient),
    }
});

/// A client connection whose reads run against its phase's deadline.
#[derive(Debug)]
pub struct GuardedStream {
    inner: Stream,
    control: Arc<ConnectionControl>,
    limits: ClientLimits,
    /// Clients cut off, by reason.
    cutoffs: prometheus::IntCounterVec,
    /// The phase the counters and deadline below belong to.
    phase: Phase,
    phase_started: Instant,
    /// Bytes read in this phase.
    phase_bytes: u64,
    timer: Pin<Box<Sleep>>,
    timer_deadline: Option<Instant>,
    /// Pingora's answer to an unreadable head was replaced by a problem answer.
    answered_for_pingora: bool,
    /// An HTTP/2 connection: nothing of HTTP/1.1 is ever written on it.
    multiplexed: bool,
    /// The first request head, read before Pingora took over, handed to it first.
    replay: Vec<u8>,
    replayed: usize,
    _permit: Permit,
}

impl GuardedStream {
    #[must_use]
    pub fn new(
        inner: Stream,
        permit: Permit,
        limits: ClientLimits,
        cutoffs: prometheus::IntCounterVec,
    ) -> Self {
        let now = Instant::now();
        GuardedStream {
            inner,
            control: Arc::default(),
            limits,
            cutoffs,
            phase: Phase::Idle,
            phase_started: now,
            phase_bytes: 0,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            timer_deadline: None,
            answered_for_pingora: false,
            multiplexed: false,
            replay: Vec::new(),
            replayed: 0,
            _permit: permit,
        }
    }

    /// Reads the connection's first request head (until the blank line), under the head
    /// deadline and size cap, into a buffer Pingora reads first. A connection that is only
    /// half a head so far costs this buffer and a small task, not Pingora's whole request
    /// machinery. `false`: the client left (or idled out) before a complete head.
    pub async fn read_first_head(&mut self) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut head = Vec::with_capacity(FIRST_READ);
        loop {
            if head.len() == head.capacity() {
                head.reserve(head.len());
            }
            let searched_from = head.len().saturating_sub(3);
            match self.read_buf(&mut head).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            if head[searched_from..].windows(4).any(|w| w == b"\r\n\r\n") {
                self.replay = head;
                return true;
            }
        }
    }

    /// Reads an HTTP/2 connection's opening (the client preface and its first frame, which
    /// must be SETTINGS) under the head deadline, counted from the call (the TLS handshake
    /// that chose HTTP/2 has just ended), into the buffer Pingora reads first; from
    /// then on the connection has no deadline of this guard: its streams are many and
    /// overlap, so Pingora's HTTP/2 idle timeout closes it when none is open. `false`: the
    /// client left, was too slow, or did not open with HTTP/2.
    pub async fn read_h2_preface(&mut self) -> bool {
        use tokio::io::AsyncReadExt as _;
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        const FRAME_HEADER: usize = 9;
        const SETTINGS: u8 = 0x4;
        // RFC 9113 §6.5.1: six bytes per setting; a handful are defined.
        const MOST_SETTINGS_BYTES: usize = 6 * 32;
        // The opening is a head: its deadline runs from now, not from a first byte.
        self.multiplexed = true;
        self.enter(Phase::Head);
        let mut opening = Vec::with_capacity(PREFACE.len() + FRAME_HEADER + 36);
        let mut wanted = PREFACE.len() + FRAME_HEADER;
        while opening.len() < wanted {
            match self.read_buf(&mut opening).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            let preface_part = opening.len().min(PREFACE.len());
            if opening[..preface_part] != PREFACE[..preface_part] {
                return false;
            }
            if let Some(header) = opening.get(PREFACE.len()..PREFACE.len() + FRAME_HEADER) {
                let length = usize::from(header[0]) << 16
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]);
                if header[3] != SETTINGS || length > MOST_SETTINGS_BYTES {
                    return false;
                }
                wanted = PREFACE.len() + FRAME_HEADER + length;
            }
        }
        self.replay = opening;
        self.enter(Phase::Open);
        true
    }

    /// Follows a phase change the proxy made.
    fn follow_phase(&mut self) {
        let phase = self.control.phase();
        if phase != self.phase {
            self.enter(phase);
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_started = Instant::now();
        self.phase_bytes = 0;
        self.control.phase.store(phase as u8, Ordering::Release);
        if phase == Phase::Body {
            self.control.body_timed_out.store(0, Ordering::Release);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let limits = &self.limits;
        match self.phase {
            Phase::Idle => Some(self.phase_started + limits.idle_timeout),
            Phase::Head => Some(self.phase_started + limits.header_timeout),
            Phase::Body => {
                let earned = self
                    .phase_bytes
                    .checked_div(limits.body_min_rate)
                    .unwrap_or(0);
                Some(self.phase_started + limits.body_timeout + Duration::from_secs(earned))
            }
            Phase::Open => None,
        }
    }

    /// Best effort: the socket of a client that sent little has room for a short answer.
    fn answer(&mut self, cx: &mut Context<'_>, answer: &[u8]) {
        if self.multiplexed {
            return;
        }
        if let Poll::Ready(Ok(n)) = Pin::new(&mut self.inner).poll_write(cx, answer) {
            if n == answer.len() {
                let _ = Pin::new(&mut self.inner).poll_flush(cx);
            }
        }
    }

    /// Nothing is written while a head is being read but Pingora's answer to a head it
    /// could not parse: that answer is replaced by a problem answer and the rest of it
    /// swallowed. True when `written` was taken care of here.
    fn intercept(&mut self, cx: &mut Context<'_>, written: &[u8]) -> bool {
        self.follow_phase();
        if self.phase != Phase::Head || written.is_empty() {
            return false;
        }
        if self.answered_for_pingora {
            return true;
        }
        match problem_for_pingora_answer(written) {
            Some(answer) => {
                self.answered_for_pingora = true;
                self.answer(cx, &answer);
                true
            }
            None => false,
        }
    }

    /// What a read that ran past its phase's deadline returns.
    fn expire(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.phase {
            // Closing an idle connection is ordinary: an end of stream, no answer.
            Phase::Idle | Phase::Open => Poll::Ready(Ok(())),
            Phase::Head => {
                self.cutoffs.with_label_values(&["head"]).inc();
                self.answer(cx, &CANNED.head_timeout);
                Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
            }
            Phase::Body => {
                self.cutoffs.with_label_values(&["body"]).inc();
                self.control.body_timed_out.store(1, Ordering::Release);
                Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
            }
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.follow_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 && this.phase == Phase::Idle {
                    this.enter(Phase::Head);
                }
                this.phase_bytes += read as u64;
                if this.phase == Phase::Head
                    && this.phase_bytes > this.limits.max_header_bytes as u64
                {
                    this.cutoffs.with_label_values(&["head_too_large"]).inc();
                    this.answer(cx, &CANNED.head_too_large);
                    return Poll::Ready(Err(std::io::ErrorKind::InvalidData.into()));
                }
                return Poll::Ready(Ok(()));
            }
            other @ Poll::Ready(Err(_)) => return other,
            Poll::Pending => {}
        }
        let Some(deadline) = this.deadline() else {
            return Poll::Pending;
        };
        if this.timer_deadline != Some(deadline) {
            this.timer.as_mut().reset(deadline);
            this.timer_deadline = Some(deadline);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            return this.expire(cx);
        }
        Poll::Pending
    }
}

/// Pingora's own answer to a request it could not read (an empty `400` with `Server:
/// Pingora`), said as problem+json like every other refusal of the gateway.
fn problem_for_pingora_answer(written: &[u8]) -> Option<Vec<u8>> {
    let status: u16 = std::str::from_utf8(written.get(9..12)?)
        .ok()?
        .parse()
        .ok()?;
    if !written.starts_with(b"HTTP/1.") || !(400..600).contains(&status) {
        return None;
    }
    let (code, detail) = match status {
        400 => (
            "malformed-request",
            "the request could not be read as HTTP/1.1",
        ),
        405 => ("method-not-allowed", "this method is not proxied"),
        _ => ("request-refused", "the request could not be handled"),
    };
    let status = StatusCode::from_u16(status).ok()?;
    Some(crate::problem::render(&Rejection::new(status, code, detail)).to_closing_http1())
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.intercept(cx, buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if this.intercept(cx, first) {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_answers_declare_their_length() {
        let canned = &*CANNED;
        for answer in [
            &canned.head_timeout,
            &canned.head_too_large,
            &canned.too_many_connections,
            &canned.too_many_from_client,
        ] {
            let text = std::str::from_utf8(answer).expect("ascii");
            let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
            let declared: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.parse().ok())
                .expect("length");
            assert_eq!(declared, body.len(), "{head}");
            let _: serde_json::Value = serde_json::from_str(body).expect("json");
        }
    }

    #[test]
    fn caps_count_in_all_and_per_address_and_release_on_drop() {
        let counts = Arc::new(ConnectionCounts::new(
            prometheus::IntGauge::new("open", "open").expect("gauge"),
        ));
        let limits = ClientLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..ClientLimits::default()
        };
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = counts.admit(Some(a), &limits).expect("first");
        let _second = counts.admit(Some(a), &limits).expect("second");
        assert_eq!(
            counts.admit(Some(a), &limits).err(),
            Some(Refusal::TooManyFromClient)
        );
        let _third = counts.admit(Some(b), &limits).expect("other client");
        assert_eq!(
            counts.admit(None, &limits).err(),
            Some(Refusal::TooManyConnections)
        );
        drop(first);
        assert_eq!(counts.open(), 2);
        assert!(counts.admit(Some(a), &limits).is_ok());
        assert_eq!(counts.open(), 2, "the permit above was dropped at once");
    }
}
