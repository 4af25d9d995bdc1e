//! A bound on how long a connection may take no part of a response: a client that asks for
//! a value and never reads it fills the socket's buffers, and without a bound the write
//! (and the connection's slot, see [`super::ServerLimits`]) would wait forever.
//!
//! The bound is on a stall, not on the whole response: every write that makes progress
//! starts the clock again, so a slow reader that keeps reading is served to the end.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose writes fail with [`io::ErrorKind::TimedOut`] once they have made no
/// progress for the timeout.
#[derive(Debug)]
pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write could not proceed; cleared by any progress. Boxed so that the
    /// stream stays `Unpin`, and allocated only when a write stalls.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    /// Wraps `inner`; a write stalled for `timeout` fails.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// What to answer for a write that could not proceed now: wait, or fail once the
    /// stall has lasted the timeout.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took no part of the response within the client timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn outcome<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.outcome(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.outcome(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.outcome(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.outcome(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_the_timeout_and_progress_restarts_the_clock() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut near = WriteTimeout::new(near, Duration::from_millis(500));
        // The pipe holds 16 bytes: the next write stalls until the far end reads.
        near.write_all(&[1; 16]).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = [0u8; 16];
            // Read a little every 400 ms: each read lets the writer make progress before
            // its 500 ms are up.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                far.read_exact(&mut got).await.unwrap();
            }
            far
        });
        near.write_all(&[2; 32]).await.unwrap();
        let _far = reader.await.unwrap();
        // Now nobody reads: the write fails once it has stalled for 500 ms.
        let started = tokio::time::Instant::now();
        near.write_all(&[3; 16]).await.unwrap();
        let err = near.write_all(&[4; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }
}
