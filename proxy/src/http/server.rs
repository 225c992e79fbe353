//! Serving a downstream connection with hyper: HTTP/1.1, HTTP/2 with prior knowledge, or either
//! chosen by the client's first bytes (`codec_type: AUTO`).

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};

use super::{ConnInfo, HttpManager, forward};
use crate::{config::Codec, conn::Conn, snapshot::Live};

/// Serves HTTP on `stream` until the client closes it, or it stays idle for the connection
/// manager's `idle_timeout` (then it is shut down gracefully: requests in flight finish).
pub async fn serve(
    stream: Conn,
    conn: ConnInfo,
    mgr: Arc<HttpManager>,
    live: Arc<Live>,
    drain: watch::Receiver<bool>,
) {
    let config = mgr.config.clone();
    let client = conn.client;
    let conn = Arc::new(conn);
    let svc = {
        let mgr = mgr.clone();
        service_fn(move |req: Request<Incoming>| {
            let mgr = mgr.clone();
            let conn = conn.clone();
            // Routes and clusters as they are when the request starts, kept until it ends.
            let snapshot = live.load();
            async move {
                // Copy what the log line needs only when it will be written.
                let logged = tracing::enabled!(tracing::Level::DEBUG)
                    .then(|| (req.method().clone(), req.uri().path().to_string()));
                let (resp, outcome) = forward::handle(req, &conn, &mgr, &snapshot).await;
                if let Some((method, path)) = logged {
                    tracing::debug!(
                        client = %conn.client,
                        %method,
                        path,
                        status = outcome.status.as_u16(),
                        cluster = ?outcome.cluster,
                        flag = ?outcome.flag.map(crate::flags::ResponseFlag::short),
                        "http request done"
                    );
                }
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(IdleIo {
        inner: stream,
        activity: activity.clone(),
    });
    let result = match config.codec {
        Codec::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.preserve_header_case(true)
                .max_buf_size(config.max_request_headers_bytes.max(8192))
                .max_headers(config.max_headers_count)
                .timer(TokioTimer::new())
                .header_read_timeout(config.request_headers_timeout);
            let conn = b.serve_connection(io, svc).with_upgrades();
            drive(conn, &activity, config.idle_timeout, drain, |c| {
                c.graceful_shutdown()
            })
            .await
            .map_err(|e| e.to_string())
        }
        Codec::Http2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            configure_h2(&mut b, &mgr);
            let conn = b.serve_connection(io, svc);
            drive(conn, &activity, config.idle_timeout, drain, |c| {
                c.graceful_shutdown()
            })
            .await
            .map_err(|e| e.to_string())
        }
        Codec::Auto => {
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .preserve_header_case(true)
                .max_buf_size(config.max_request_headers_bytes.max(8192))
                .max_headers(config.max_headers_count)
                .timer(TokioTimer::new())
                .header_read_timeout(config.request_headers_timeout);
            {
                let mut h2 = b.http2();
                h2.timer(TokioTimer::new()).max_header_list_size(
                    u32::try_from(config.max_request_headers_bytes).unwrap_or(u32::MAX),
                );
                if let Some(n) = config.http2.max_concurrent_streams {
                    h2.max_concurrent_streams(n);
                }
                if let Some(n) = config.http2.initial_stream_window_size {
                    h2.initial_stream_window_size(n);
                }
                if let Some(n) = config.http2.initial_connection_window_size {
                    h2.initial_connection_window_size(n);
                }
                if config.http2.allow_connect {
                    h2.enable_connect_protocol();
                }
            }
            let conn = b.serve_connection_with_upgrades(io, svc);
            drive(conn, &activity, config.idle_timeout, drain, |c| {
                c.graceful_shutdown()
            })
            .await
            .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "http connection ended");
    }
}

/// Runs a connection to its end. Once no byte has moved for `idle`, or when the listener
/// drains, asks it to shut down gracefully (HTTP/1: close when no request is in flight; HTTP/2:
/// GOAWAY) and waits for that. The idle check runs every `idle`, so a connection closes between
/// one and two `idle`s after its last byte: the IO path only sets a flag, with no clock read per
/// read or write.
async fn drive<C, T, E>(
    conn: C,
    activity: &Activity,
    idle: Option<Duration>,
    mut drain: watch::Receiver<bool>,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<T, E>
where
    C: Future<Output = Result<T, E>>,
{
    let mut conn = std::pin::pin!(conn);
    loop {
        tokio::select! {
            out = conn.as_mut() => return out,
            () = crate::listener::drained(&mut drain) => break,
            () = tokio::time::sleep(idle.unwrap_or(Duration::MAX)), if idle.is_some() => {
                if !activity.take() {
                    break;
                }
            }
        }
    }
    shutdown(conn.as_mut());
    conn.await
}

fn configure_h2(b: &mut hyper::server::conn::http2::Builder<TokioExecutor>, mgr: &HttpManager) {
    let config = &mgr.config;
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_request_headers_bytes).unwrap_or(u32::MAX));
    if let Some(n) = config.http2.max_concurrent_streams {
        b.max_concurrent_streams(n);
    }
    if let Some(n) = config.http2.initial_stream_window_size {
        b.initial_stream_window_size(n);
    }
    if let Some(n) = config.http2.initial_connection_window_size {
        b.initial_connection_window_size(n);
    }
    if config.http2.allow_connect {
        b.enable_connect_protocol();
    }
}

/// Whether a connection moved a byte since the idle check last looked.
#[derive(Debug)]
struct Activity {
    moved: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            moved: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    /// Whether anything moved since the last call.
    fn take(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed)
    }
}

/// The downstream socket, recording activity on every successful read and write.
#[derive(Debug)]
struct IdleIo {
    inner: Conn,
    activity: Arc<Activity>,
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
