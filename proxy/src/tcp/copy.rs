//! Bidirectional byte copy between two connections (plain TCP or TLS), with half-close and an
//! idle timeout.
//!
//! Hot path: one call per proxied connection, polled on every readiness change. It allocates
//! its two buffers once, takes no locks and logs nothing.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// Bytes buffered per direction.
const BUF_SIZE: usize = 16 * 1024;

/// How a copy ended.
#[derive(Debug)]
pub enum CopyEnd {
    /// Both sides finished sending (each FIN was passed on).
    Done,
    /// No byte moved in either direction for the idle timeout.
    IdleTimeout,
    /// A socket failed; `Side` says which one.
    Error(Side, io::Error),
}

/// Which connection of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client's connection to the proxy.
    Downstream,
    /// The proxy's connection to the upstream host.
    Upstream,
}

/// Byte counts of a copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    /// From the client to the upstream.
    pub sent_upstream: u64,
    /// From the upstream to the client.
    pub sent_downstream: u64,
}

/// One direction: read from one side into `buf`, write it to the other, pass EOF on as a
/// write shutdown.
#[derive(Debug)]
struct Pipe {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    read_eof: bool,
    done: bool,
    /// Bytes were written since the last flush (TLS buffers records until flushed).
    unflushed: bool,
    bytes: u64,
}

/// The copy future.
#[derive(Debug)]
struct Duplex<'a, D, U> {
    down: &'a mut D,
    up: &'a mut U,
    to_up: Pipe,
    to_down: Pipe,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    last_activity: Instant,
}

/// Copies bytes both ways until both directions have ended, a socket fails, or nothing moves for
/// `idle_timeout`. Each side's EOF is passed on as a write shutdown of the other, so half-closed
/// connections keep working in the open direction.
pub async fn bidirectional<D, U>(
    down: &mut D,
    up: &mut U,
    idle_timeout: Option<Duration>,
) -> (Transferred, CopyEnd)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let now = Instant::now();
    let mut duplex = Duplex {
        down,
        up,
        to_up: Pipe::new(),
        to_down: Pipe::new(),
        idle: idle_timeout.map(|d| (d, Box::pin(tokio::time::sleep_until(now + d)))),
        last_activity: now,
    };
    let end = std::future::poll_fn(|cx| duplex.poll_copy(cx)).await;
    let transferred = Transferred {
        sent_upstream: duplex.to_up.bytes,
        sent_downstream: duplex.to_down.bytes,
    };
    (transferred, end)
}

// === impl Pipe ===

impl Pipe {
    fn new() -> Self {
        Self {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            cap: 0,
            read_eof: false,
            done: false,
            unflushed: false,
            bytes: 0,
        }
    }

    /// Moves bytes from `r` to `w` until `r` has nothing more for now. Sets `moved` when any
    /// byte was read or written. Ready when this direction is finished.
    fn poll_pipe<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        moved: &mut bool,
    ) -> Poll<Result<(), (bool, io::Error)>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // The error flag says whether the failure was on the read side (`true`) or write side.
        loop {
            if self.pos == self.cap && !self.read_eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Ready(result) => result.map_err(|e| (true, e))?,
                    Poll::Pending => {
                        // Nothing more to read for now: push out what the writer holds.
                        if self.unflushed {
                            ready!(Pin::new(&mut *w).poll_flush(cx)).map_err(|e| (false, e))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
                let n = rb.filled().len();
                if n == 0 {
                    self.read_eof = true;
                } else {
                    self.pos = 0;
                    self.cap = n;
                    *moved = true;
                }
            }
            while self.pos < self.cap {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.cap]))
                    .map_err(|e| (false, e))?;
                if n == 0 {
                    return Poll::Ready(Err((false, io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.bytes += n as u64;
                self.unflushed = true;
                *moved = true;
            }
            if self.read_eof {
                // Half-close: tell the other side no more bytes are coming this way.
                ready!(Pin::new(&mut *w).poll_shutdown(cx)).map_err(|e| (false, e))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

// === impl Duplex ===

impl<D, U> Duplex<'_, D, U>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_copy(&mut self, cx: &mut Context<'_>) -> Poll<CopyEnd> {
        let mut moved = false;
        if !self.to_up.done
            && let Poll::Ready(Err((on_read, e))) =
                self.to_up.poll_pipe(cx, self.down, self.up, &mut moved)
        {
            let side = if on_read {
                Side::Downstream
            } else {
                Side::Upstream
            };
            return Poll::Ready(CopyEnd::Error(side, e));
        }
        if !self.to_down.done
            && let Poll::Ready(Err((on_read, e))) =
                self.to_down.poll_pipe(cx, self.up, self.down, &mut moved)
        {
            let side = if on_read {
                Side::Upstream
            } else {
                Side::Downstream
            };
            return Poll::Ready(CopyEnd::Error(side, e));
        }
        if self.to_up.done && self.to_down.done {
            return Poll::Ready(CopyEnd::Done);
        }
        if let Some((timeout, sleep)) = &mut self.idle {
            if moved {
                // Only remember the time; the timer is moved lazily when it fires, so busy
                // connections do not re-arm it on every read.
                self.last_activity = Instant::now();
            }
            while sleep.as_mut().poll(cx).is_ready() {
                let deadline = self.last_activity + *timeout;
                if Instant::now() >= deadline {
                    return Poll::Ready(CopyEnd::IdleTimeout);
                }
                sleep.as_mut().reset(deadline);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
