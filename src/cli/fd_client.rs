//! An upload that hands the daemon an open file (`src_fd`) instead of a path:
//! the CLI opens the file itself (as the user who runs it) and sends the
//! descriptor with the request's first bytes (`SCM_RIGHTS`, see the README's
//! developers' section). Used when the daemon listens on a unix socket and the
//! file is outside its `upload_dirs`.
//!
//! reqwest cannot attach ancillary data to its writes, so this request is
//! HTTP/1 by hyper over a unix stream of its own whose first write is a
//! `sendmsg`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

/// Whether `path` lies outside every upload dir (as the daemon would judge it:
/// symlinks followed, `..` resolved), so that the daemon would refuse it.
pub(crate) fn outside_upload_dirs(path: &Path, upload_dirs: &[PathBuf]) -> bool {
    let Ok(resolved) = crate::images::src_path::resolve(path) else {
        return true;
    };
    !upload_dirs.iter().any(|dir| {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        resolved.starts_with(&dir) && resolved != dir
    })
}

/// Opens the image file to pass: read-only, not following a final symlink
/// into a FIFO's wait (`O_NONBLOCK`), close-on-exec.
pub(crate) fn open_for_passing(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// A request to send with one descriptor.
pub(crate) struct FdRequest<'a> {
    /// The daemon's socket.
    pub(crate) socket: &'a Path,
    /// `POST` target, with its query.
    pub(crate) path_and_query: &'a str,
    /// Header names and values (the bearer token among them).
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub(crate) body: Vec<u8>,
    /// The file whose descriptor goes with the request (`src_fd: 0`).
    pub(crate) file: &'a File,
}

/// Sends `request` and returns the answer's status and text.
pub(crate) async fn post(request: FdRequest<'_>, timeout: Duration) -> io::Result<(u16, String)> {
    tokio::time::timeout(timeout, exchange(request))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?
}

async fn exchange(request: FdRequest<'_>) -> io::Result<(u16, String)> {
    let stream = UnixStream::connect(request.socket).await?;
    let fd = request.file.try_clone()?.into();
    let io = TokioIo::new(PassingStream {
        inner: stream,
        pending: Some(fd),
    });
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(io::Error::other)?;
    let driver = tokio::spawn(connection);
    let mut builder = hyper::Request::post(request.path_and_query)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let http_request = builder
        .body(Full::new(Bytes::from(request.body)))
        .map_err(io::Error::other)?;
    let answered = async {
        let response = sender
            .send_request(http_request)
            .await
            .map_err(io::Error::other)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
    .await;
    driver.abort();
    answered
}

/// A unix stream whose first write carries a descriptor (`sendmsg` with
/// `SCM_RIGHTS`); the rest is a plain stream.
struct PassingStream {
    /// The connection to the daemon.
    inner: UnixStream,
    /// The descriptor still to send (our own duplicate, closed once sent).
    pending: Option<OwnedFd>,
}

impl PassingStream {
    fn send_with_fd(&self, buf: &[u8], fd: &OwnedFd) -> io::Result<usize> {
        let fds = [fd.as_raw_fd()];
        let cmsgs = [ControlMessage::ScmRights(&fds)];
        let iov = [io::IoSlice::new(buf)];
        sendmsg::<()>(
            self.inner.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)
    }
}

impl AsyncWrite for PassingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let this = &*self;
            let sent = match &this.pending {
                Some(fd) => this
                    .inner
                    .try_io(Interest::WRITABLE, || this.send_with_fd(buf, fd)),
                None => continue,
            };
            match sent {
                // Sent with the first byte at least: the descriptor went too.
                Ok(n) => {
                    self.pending = None;
                    return Poll::Ready(Ok(n));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for PassingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_passed_open_only_when_the_daemon_would_refuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let images = root.join("images");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("charm")).unwrap();
        let dirs = vec![images.clone()];
        assert!(!outside_upload_dirs(&images.join("sub/x.img"), &dirs));
        assert!(!outside_upload_dirs(&images.join("not-yet.img"), &dirs));
        assert!(outside_upload_dirs(&root.join("charm/x.img"), &dirs));
        assert!(outside_upload_dirs(&images.join("../charm/x.img"), &dirs));
        assert!(
            outside_upload_dirs(&images, &dirs),
            "the dir itself is no file in it"
        );
        // A symlink inside that leads out is judged by where it leads.
        std::os::unix::fs::symlink(root.join("charm"), images.join("out")).unwrap();
        assert!(outside_upload_dirs(&images.join("out/x.img"), &dirs));
    }
}
