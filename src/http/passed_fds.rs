//! Descriptors passed over the unix socket (`SCM_RIGHTS`): an upload may hand the
//! daemon an open file instead of a path (`"src_fd"`, see the README's developers'
//! section for the wire form).
//!
//! The unix listener's streams read with `recvmsg`, so that the descriptors sent
//! with a request's bytes are received with them; each connection keeps its own
//! ([`ConnectionFds`], handed to every request of the connection as its
//! `ConnectInfo`). When a request begins, [`take_for_request`] moves the
//! descriptors received so far on its connection into the request
//! ([`ReceivedFds`]): `src_fd: 0` is the first of them. Whatever the request does
//! not use is closed when the request ends, and whatever arrives on a connection
//! no request takes is closed with the connection: a descriptor is never kept
//! past the request it came with, and never seen by another connection.
//!
//! Descriptors are received with `MSG_CMSG_CLOEXEC`, so no child process (the
//! conversion's `qemu-img`) inherits one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

/// Most descriptors one read takes; more sent at once are closed by the kernel
/// (the request then names an index it did not get).
const MAX_FDS_PER_READ: usize = 16;
/// Most descriptors a connection holds before a request takes them; past it,
/// new ones are closed at once.
const MAX_FDS_PER_CONNECTION: usize = 64;

/// The unix listener whose connections receive descriptors.
#[derive(Debug)]
pub(crate) struct FdListener {
    /// The bound socket (see `daemon::Listener::bind`).
    inner: UnixListener,
}

impl FdListener {
    pub(crate) fn new(inner: UnixListener) -> FdListener {
        FdListener { inner }
    }
}

impl axum::serve::Listener for FdListener {
    type Io = FdStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => return (FdStream::new(stream), addr),
                Err(err) => accept_failed(err).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// As axum's own listeners do: a connection that failed while it was accepted
/// is only that connection's problem; anything else (out of descriptors) is
/// logged and waited out, so the accept loop does not spin.
async fn accept_failed(err: io::Error) {
    let per_connection = matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    );
    if !per_connection {
        tracing::error!(error = %err, "accepting a connection on the unix socket failed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The descriptors a connection received that no request took yet.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionFds(Arc<Mutex<Vec<OwnedFd>>>);

impl ConnectionFds {
    fn push(&self, fds: impl IntoIterator<Item = OwnedFd>) {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for fd in fds {
            if held.len() < MAX_FDS_PER_CONNECTION {
                held.push(fd);
            }
            // Else `fd` is dropped here: closed.
        }
    }

    fn take(&self) -> Vec<OwnedFd> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Connected<IncomingStream<'_, FdListener>> for ConnectionFds {
    fn connect_info(stream: IncomingStream<'_, FdListener>) -> Self {
        stream.io().fds.clone()
    }
}

/// A connection of the unix listener: reads with `recvmsg`, keeping the
/// descriptors that come with the bytes; writes as any stream.
#[derive(Debug)]
pub(crate) struct FdStream {
    /// The accepted connection.
    inner: UnixStream,
    /// What it received and no request took yet.
    fds: ConnectionFds,
}

impl FdStream {
    fn new(inner: UnixStream) -> FdStream {
        FdStream {
            inner,
            fds: ConnectionFds::default(),
        }
    }

    /// One `recvmsg` into `buf`: the bytes read, the descriptors kept.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS_PER_READ]);
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            self.inner.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut received = Vec::new();
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this
                // process for this message; nothing else owns them.
                received.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            tracing::warn!(
                max = MAX_FDS_PER_READ,
                "a client sent more descriptors at once than the daemon takes; the rest were closed"
            );
        }
        let bytes = msg.bytes;
        self.fds.push(received);
        Ok(bytes)
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match self
                .inner
                .try_io(Interest::READABLE, || self.recv(unfilled))
            {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The descriptors that came with a request (`src_fd` indexes them), or none
/// over TCP, which cannot carry one.
#[derive(Debug, Clone)]
pub(crate) enum ReceivedFds {
    /// The request came over TCP.
    Tcp,
    /// The request came over the unix socket, with these descriptors (in the
    /// order sent); one taken by the request is `None`.
    Unix(Arc<Mutex<Vec<Option<OwnedFd>>>>),
}

/// Why a request's `src_fd` names no descriptor it can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FdError {
    #[error(
        "src_fd needs the daemon's unix socket: a descriptor is passed with SCM_RIGHTS, \
         which TCP cannot carry; send src_path, or connect to the unix socket"
    )]
    NotUnix,
    #[error(
        "src_fd {index}: this request came with {received} descriptor(s) (SCM_RIGHTS with \
         its first bytes; src_fd counts them from 0)"
    )]
    NotReceived { index: u32, received: usize },
}

impl ReceivedFds {
    /// Takes the descriptor `src_fd` names.
    pub(crate) fn take(&self, index: u32) -> Result<OwnedFd, FdError> {
        let ReceivedFds::Unix(fds) = self else {
            return Err(FdError::NotUnix);
        };
        let mut fds = fds.lock().unwrap_or_else(PoisonError::into_inner);
        let received = fds.len();
        usize::try_from(index)
            .ok()
            .and_then(|i| fds.get_mut(i))
            .and_then(Option::take)
            .ok_or(FdError::NotReceived { index, received })
    }
}

/// Middleware: moves the descriptors received on the request's connection into
/// the request (see the module); over TCP, records that there are none.
pub(crate) async fn take_for_request(mut request: Request, next: Next) -> Response {
    let received = match request.extensions().get::<ConnectInfo<ConnectionFds>>() {
        Some(ConnectInfo(connection)) => ReceivedFds::Unix(Arc::new(Mutex::new(
            connection.take().into_iter().map(Some).collect(),
        ))),
        None => ReceivedFds::Tcp,
    };
    request.extensions_mut().insert(received);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::os::fd::AsFd;
    use tokio::io::AsyncReadExt;

    /// Sends `bytes` on `stream` with `fds` attached.
    fn send_with(stream: &std::os::unix::net::UnixStream, bytes: &[u8], fds: &[&std::fs::File]) {
        let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let iov = [io::IoSlice::new(bytes)];
        sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
    }

    fn is_cloexec(fd: &OwnedFd) -> bool {
        let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
    }

    #[tokio::test]
    async fn descriptors_come_with_the_bytes_and_stay_with_their_connection() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let (a_client, a_server) = std::os::unix::net::UnixStream::pair().unwrap();
        let (b_client, b_server) = std::os::unix::net::UnixStream::pair().unwrap();
        let wrap = |s: std::os::unix::net::UnixStream| {
            s.set_nonblocking(true).unwrap();
            FdStream::new(UnixStream::from_std(s).unwrap())
        };
        let (mut a, mut b) = (wrap(a_server), wrap(b_server));
        send_with(&a_client, b"GET / HTTP/1.1\r\n", &[&file, &file]);
        std::io::Write::write_all(&mut &b_client, b"GET /").unwrap();
        let mut buf = [0u8; 64];
        let n = a.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n");
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /");
        assert!(b.fds.take().is_empty(), "b got none of a's descriptors");
        let taken = a.fds.take();
        assert_eq!(taken.len(), 2);
        assert!(taken.iter().all(is_cloexec), "received close-on-exec");
        assert!(a.fds.take().is_empty(), "taken once");
    }

    #[test]
    fn a_request_takes_its_descriptor_once_and_over_tcp_none() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = ReceivedFds::Unix(Arc::new(Mutex::new(vec![Some(file.into())])));
        assert!(fds.take(0).is_ok());
        assert_eq!(
            fds.take(0).unwrap_err(),
            FdError::NotReceived {
                index: 0,
                received: 1
            }
        );
        assert!(fds.take(7).is_err());
        assert_eq!(ReceivedFds::Tcp.take(0).unwrap_err(), FdError::NotUnix);
    }
}
