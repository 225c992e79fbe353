//! A proxied connection's byte stream: plain TCP, or TLS over TCP (terminated or originated).
//!
//! One enum rather than generics, so the HTTP server, the pools and the TCP copy each have one
//! instantiation.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// A connection to a client or an upstream host.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS terminated by this proxy.
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS originated by this proxy.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

// === impl Conn ===

impl Conn {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::TlsServer(s) => s.get_ref().0,
            Conn::TlsClient(s) => s.get_ref().0,
        }
    }

    /// The local address of the TCP connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Whether the bytes are encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Conn::Plain(_))
    }
}

impl From<TcpStream> for Conn {
    fn from(s: TcpStream) -> Self {
        Conn::Plain(s)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::TlsServer(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Conn::TlsClient(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::TlsServer(s) => s.is_write_vectored(),
            Conn::TlsClient(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::TlsServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
