//! Deadlines on a client connection's I/O that hyper does not enforce.
//!
//! - **First request.** hyper-util's protocol detection (HTTP/1 or the
//!   HTTP/2 preface) has no timeout, and hyper's `header_read_timeout` only
//!   starts after it: a client that connects and sends nothing, or half of
//!   the HTTP/2 preface, would hold a connection slot forever. Until the
//!   bytes read tell the protocol (they stop matching the HTTP/2 preface,
//!   or the whole preface has arrived), reads fail with `TimedOut` once
//!   `first_request` has passed since accept; after that hyper's own
//!   header timeout applies to HTTP/1 heads.
//! - **Send stall.** A client that stops reading fills its receive window;
//!   the gateway then cannot write. Memory stays bounded (hyper's buffers
//!   and the socket's), but the connection and its upstream call would be
//!   held forever. A write or flush that makes no progress for
//!   `send_stall` fails with `TimedOut`, which ends the connection.
//!
//! ```text
//! TokioIo::new(ClientIo::new(stream, limits.request_header_timeout.0, limits.send_timeout.0))
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client connection with the deadlines above.
pub struct ClientIo<I> {
    inner: I,
    /// Until the protocol is known: when reads stop being allowed to wait.
    first: Option<Pin<Box<Sleep>>>,
    /// The first bytes read, while they are a prefix of the HTTP/2 preface.
    seen: Vec<u8>,
    send_stall: Duration,
    /// Running while a write or flush is pending.
    stall: Option<Pin<Box<Sleep>>>,
}

impl<I> ClientIo<I> {
    pub fn new(inner: I, first_request: Duration, send_stall: Duration) -> Self {
        ClientIo {
            inner,
            first: Some(Box::pin(tokio::time::sleep(first_request))),
            seen: Vec::new(),
            send_stall,
            stall: None,
        }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, what.to_string())
    }

    /// After a pending write or flush: start or check the stall timer.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let send_stall = self.send_stall;
        let t = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send_stall)));
        match t.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Self::timed_out("client stopped reading")),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed(&mut self) {
        if let Some(t) = &mut self.stall {
            // Re-armed only when the next write stalls.
            t.as_mut().reset(Instant::now() + self.send_stall);
            self.stall = None;
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ClientIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if this.first.is_some() => {
                let new = &buf.filled()[before..];
                let want = PREFACE.len() - this.seen.len();
                this.seen.extend_from_slice(&new[..new.len().min(want)]);
                if this.seen.len() == PREFACE.len() || !PREFACE.starts_with(&this.seen) {
                    this.first = None;
                    this.seen = Vec::new();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some(t) = &mut this.first {
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(Self::timed_out(
                            "no request within the request header timeout",
                        )));
                    }
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_stall(cx).map(Err),
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_stall(cx).map(Err),
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_stall(cx).map(Err),
            Poll::Ready(r) => {
                if let Some(t) = &mut this.stall {
                    t.as_mut().reset(Instant::now() + this.send_stall);
                    this.stall = None;
                }
                Poll::Ready(r)
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
