//! Accepting connections for the front ends, within [`crate::Limits::max_connections`]: a
//! listener accepts the next connection only while fewer than that many are open, so past the
//! limit new clients wait in the kernel's listen backlog (back-pressure) instead of growing the
//! node's memory. Each accepted connection holds a slot until it is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection that holds one of its listener's slots while it is open.
#[derive(Debug)]
pub struct Limited {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Limited {
    /// The client's address, as Kafka names a member's host ("/ip").
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.io.peer_addr().ok()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        <TcpStream as tonic::transport::server::Connected>::connect_info(&self.io)
    }
}

/// The connections `listener` accepts, at most `max` open at once. A failed accept (out of
/// file descriptors, say) is logged and retried after a moment rather than ending the stream.
pub fn accept_limited(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = std::io::Result<Limited>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(max));
    futures::stream::unfold((listener, slots), |(listener, slots)| async move {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match listener.accept().await {
                Ok((io, _)) => {
                    if let Err(e) = io.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
                    }
                    let conn = Limited { io, _slot: slot };
                    return Some((Ok(conn), (listener, slots)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// Past the limit the listener accepts nothing until a connection closes.
    #[tokio::test]
    async fn at_most_max_connections_are_accepted_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(accept_limited(listener, 2));
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let a = incoming.next().await.unwrap().unwrap();
        let _b = incoming.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(200), incoming.next());
        assert!(third.await.is_err(), "a third connection was accepted");
        drop(a);
        let third = tokio::time::timeout(std::time::Duration::from_secs(10), incoming.next());
        assert!(third.await.expect("accepted once a slot is free").is_some());
    }
}
