//! Serving a downstream connection with hyper: HTTP/1.1, HTTP/2 with prior knowledge, or either
//! chosen by the client's first bytes (`codec_type: AUTO`).

use std::{convert::Infallible, sync::Arc};

use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::{ConnInfo, HttpManager, forward};
use crate::{config::Codec, snapshot::Snapshot};

/// Serves HTTP on `stream` until the client or a timeout closes it.
pub async fn serve(
    stream: TcpStream,
    conn: ConnInfo,
    mgr: Arc<HttpManager>,
    snapshot: Arc<Snapshot>,
) {
    let config = mgr.config.clone();
    let svc = {
        let mgr = mgr.clone();
        service_fn(move |req: Request<Incoming>| {
            let mgr = mgr.clone();
            let snapshot = snapshot.clone();
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
    let io = TokioIo::new(stream);
    // hyper's header-read timeout also bounds how long an idle keep-alive connection waits for
    // its next request, so it serves for both settings (the shorter wins).
    let header_timeout = match (config.request_headers_timeout, config.idle_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let result = match config.codec {
        Codec::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.preserve_header_case(true)
                .max_buf_size(config.max_request_headers_bytes.max(8192))
                .max_headers(config.max_headers_count)
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            b.serve_connection(io, svc).with_upgrades().await
        }
        Codec::Http2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            configure_h2(&mut b, &mgr);
            b.serve_connection(io, svc).await
        }
        Codec::Auto => {
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .preserve_header_case(true)
                .max_buf_size(config.max_request_headers_bytes.max(8192))
                .max_headers(config.max_headers_count)
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
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
            }
            b.serve_connection_with_upgrades(io, svc)
                .await
                .map_err(|e| e.to_string())
                .map_err(|e| {
                    tracing::debug!(client = %conn.client, error = %e, "http connection ended");
                })
                .ok();
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %conn.client, error = %e, "http connection ended");
    }
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
}
