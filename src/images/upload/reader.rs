//! Stage "stream", the file's side: the file is read once, in [`READ_BLOCK`]
//! blocks, on a blocking thread; each block is hashed (md5 and every
//! `os_hash_algo` asked for) and handed to every [`Sink`] (one per cloud) through
//! a bounded channel, so memory stays the same whatever the file's size and the
//! number of clouds. Nothing here knows about HTTP: a sink's other end is a
//! stream of blocks ([`SinkBody`]) that the cloud's upload sends on.
//!
//! A slow sink slows the read (the next block waits until every sink took this
//! one); a sink whose receiver is gone or whose upload gave up ([`Sink::cancel`])
//! is dropped and the others go on. The file must end exactly at its size at open
//! time and must not change while it is read (see [`FileStamp`]): otherwise every
//! sink's body fails, so no cloud gets a complete body of torn bytes.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::images::source::{FileStamp, HashAlgo, SourceError, SourceFile};

/// Read block size: 4 KiB reads gave 379 MB/s over loopback, 256 KiB 3.2 GB/s.
pub(crate) const READ_BLOCK: usize = 256 * 1024;
/// Blocks queued per sink ahead of its upload: enough to keep the socket busy,
/// little memory (the blocks are shared between sinks, not copied).
const READ_AHEAD: usize = 8;

type Block = Result<Bytes, std::io::Error>;

/// What the file's bytes hash to, as Glance reports them (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digests {
    pub(crate) size: u64,
    pub(crate) md5: String,
    /// One value per `os_hash_algo` computed.
    pub(crate) os_hashes: Vec<(HashAlgo, String)>,
}

impl Digests {
    /// The file's hash by `algo`, when it was computed.
    pub(crate) fn os_hash(&self, algo: HashAlgo) -> Option<&str> {
        self.os_hashes
            .iter()
            .find(|(a, _)| *a == algo)
            .map(|(_, v)| v.as_str())
    }

    /// Adds the hash by another algorithm (computed later, see [`hash_file`]).
    pub(crate) fn add_os_hash(&mut self, algo: HashAlgo, value: String) {
        if self.os_hash(algo).is_none() {
            self.os_hashes.push((algo, value));
        }
    }
}

/// How far one sink's upload got: bytes the reader offered to it (queued, or
/// being queued) and bytes its HTTP client took. A sink whose client took all
/// it was offered waits for the reader (or for a slower sibling), not for its
/// server: it is not stalled (see `activation::watch_upload`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Flow {
    pub(crate) offered: Arc<AtomicU64>,
    pub(crate) taken: Arc<AtomicU64>,
    /// Raised (never lowered) to `taken` as blocks are taken: a job's
    /// `bytes_sent`, which only grows while a retried upload counts from 0.
    pub(crate) progress: Option<Arc<AtomicU64>>,
}

impl Flow {
    /// A flow of one try whose taken bytes also raise `progress` (e.g. a job's
    /// `bytes_sent`).
    pub(crate) fn counting_into(progress: Arc<AtomicU64>) -> Flow {
        Flow {
            offered: Arc::new(AtomicU64::new(0)),
            taken: Arc::new(AtomicU64::new(0)),
            progress: Some(progress),
        }
    }
}

/// The reader's end of one cloud's channel.
#[derive(Debug)]
pub(crate) struct Sink {
    tx: mpsc::Sender<Block>,
    cancel: CancellationToken,
    offered: Arc<AtomicU64>,
}

impl Sink {
    /// Hands `block` on; `false` when this sink is gone (its receiver dropped,
    /// or its upload gave up) and must be dropped.
    async fn send(&self, block: Bytes) -> bool {
        self.offered
            .fetch_add(block.len() as u64, Ordering::Relaxed);
        tokio::select! {
            sent = self.tx.send(Ok(block)) => sent.is_ok(),
            () = self.cancel.cancelled() => false,
        }
    }

    /// Fails the body: never waits for room (a client that stopped reading
    /// would keep the reader forever). If the channel is full, dropping the
    /// sender ends the body short of its Content-Length, which fails the
    /// request just the same.
    fn fail(&self, err: &SourceError) {
        let _ = self
            .tx
            .try_send(Err(std::io::Error::other(err.to_string())));
    }
}

/// The upload's end of one cloud's channel: the body's blocks.
#[derive(Debug)]
pub(crate) struct SinkBody {
    rx: mpsc::Receiver<Block>,
    taken: Arc<AtomicU64>,
    progress: Option<Arc<AtomicU64>>,
    cloud: String,
    /// Cancelled by the upload when it gives up: the reader drops the sink even
    /// when the HTTP client still holds this body without reading it.
    cancel: CancellationToken,
}

impl SinkBody {
    /// The token that makes the reader drop this sink.
    pub(crate) fn canceller(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The blocks as a stream (for `reqwest::Body::wrap_stream`); each block
    /// taken counts in the flow's `taken` and in the `bytes_uploaded` metric.
    pub(crate) fn into_stream(self) -> impl futures_util::Stream<Item = Block> + Send + 'static {
        futures_util::stream::unfold(self, |mut body| async move {
            let item = body.rx.recv().await?;
            if let Ok(chunk) = &item {
                let len = chunk.len() as u64;
                let taken = body.taken.fetch_add(len, Ordering::Relaxed) + len;
                if let Some(progress) = &body.progress {
                    progress.fetch_max(taken, Ordering::Relaxed);
                }
                crate::metrics::bytes_uploaded(&body.cloud, chunk.len() as u64);
            }
            Some((item, body))
        })
    }
}

/// A channel from the reader to one cloud's upload, counting into `flow`.
pub(crate) fn sink(cloud: &str, flow: &Flow) -> (Sink, SinkBody) {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let cancel = CancellationToken::new();
    let sink = Sink {
        tx,
        cancel: cancel.clone(),
        offered: flow.offered.clone(),
    };
    let body = SinkBody {
        rx,
        taken: flow.taken.clone(),
        progress: flow.progress.clone(),
        cloud: cloud.to_string(),
        cancel,
    };
    (sink, body)
}

/// Reads `source` once on a blocking thread into every sink, hashing md5 and
/// each of `algos`; `read` counts the bytes handed to every live sink. The
/// answer comes when the file was read to its end, when it failed, or when
/// every sink was dropped ([`SourceError::Abandoned`]).
pub(crate) fn spawn_reader(
    source: SourceFile,
    algos: Vec<HashAlgo>,
    sinks: Vec<Sink>,
    read: Arc<AtomicU64>,
) -> oneshot::Receiver<Result<Digests, SourceError>> {
    let (digest_tx, digest_rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut sinks = sinks;
        let result = read_and_hash(source, &algos, &mut sinks, &read, &runtime);
        if let Err(err) = &result {
            for sink in &sinks {
                sink.fail(err);
            }
        }
        let _ = digest_tx.send(result);
    });
    digest_rx
}

/// The hashes of md5 and each of `algos`, updated block by block.
struct Hashes {
    md5: Md5,
    others: Vec<(HashAlgo, aws_lc_rs::digest::Context)>,
}

impl Hashes {
    fn new(algos: &[HashAlgo]) -> Hashes {
        let mut unique = algos.to_vec();
        unique.sort_by_key(|a| a.name());
        unique.dedup();
        Hashes {
            md5: Md5::new(),
            others: unique
                .into_iter()
                .map(|a| (a, aws_lc_rs::digest::Context::new(a.algorithm())))
                .collect(),
        }
    }

    fn update(&mut self, block: &[u8]) {
        self.md5.update(block);
        for (_, ctx) in &mut self.others {
            ctx.update(block);
        }
    }

    fn finish(self, size: u64) -> Digests {
        Digests {
            size,
            md5: hex::encode(self.md5.finalize()),
            os_hashes: self
                .others
                .into_iter()
                .map(|(a, ctx)| (a, hex::encode(ctx.finish().as_ref())))
                .collect(),
        }
    }
}

fn read_and_hash(
    mut source: SourceFile,
    algos: &[HashAlgo],
    sinks: &mut Vec<Sink>,
    read: &AtomicU64,
    runtime: &tokio::runtime::Handle,
) -> Result<Digests, SourceError> {
    let mut blocks = Blocks::new(&mut source);
    let mut hashes = Hashes::new(algos);
    while let Some(block) = blocks.next_block()? {
        hashes.update(&block);
        let len = block.len() as u64;
        // Every live sink gets the block before the next one is read; the
        // sinks take it side by side.
        let live = runtime.block_on(futures_util::future::join_all(
            sinks.iter().map(|sink| sink.send(block.clone())),
        ));
        let mut live = live.into_iter();
        sinks.retain(|_| live.next().unwrap_or(false));
        if sinks.is_empty() {
            return Err(SourceError::Abandoned);
        }
        read.fetch_add(len, Ordering::Relaxed);
    }
    Ok(hashes.finish(blocks.total))
}

/// The hashes of a whole file, read from the start (`skip_unchanged` hashes
/// before it uploads; a cloud whose `os_hash_algo` was not computed while
/// streaming gets its hash this way). The file must not change meanwhile; it is
/// left at its start, to be read again.
pub(crate) fn hash_source(
    source: &mut SourceFile,
    algos: &[HashAlgo],
) -> Result<Digests, SourceError> {
    let mut blocks = Blocks::new(source);
    let mut hashes = Hashes::new(algos);
    while let Some(block) = blocks.next_block()? {
        hashes.update(&block);
    }
    let total = blocks.total;
    source
        .file
        .seek(SeekFrom::Start(0))
        .map_err(|e| SourceError::Read {
            path: source.path.clone(),
            reason: format!("seek: {e}"),
        })?;
    Ok(hashes.finish(total))
}

/// The hash of a whole open file by `algo`, read from the start.
pub(crate) fn hash_file(file: &File, algo: HashAlgo) -> std::io::Result<String> {
    let mut ctx = aws_lc_rs::digest::Context::new(algo.algorithm());
    let mut buf = vec![0u8; READ_BLOCK];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// A file's blocks, checked against its size and stamp at open time.
struct Blocks<'a> {
    source: &'a mut SourceFile,
    total: u64,
    ended: bool,
}

impl<'a> Blocks<'a> {
    fn new(source: &'a mut SourceFile) -> Blocks<'a> {
        Blocks {
            source,
            total: 0,
            ended: false,
        }
    }

    fn error(&self, reason: String) -> SourceError {
        SourceError::Read {
            path: self.source.path.clone(),
            reason,
        }
    }

    /// The next block; `None` at the end (exactly at the size at open time).
    fn next_block(&mut self) -> Result<Option<Bytes>, SourceError> {
        let size = self.source.size;
        if self.ended {
            return Ok(None);
        }
        if self.total >= size {
            self.ended = true;
            let mut probe = [0u8; 1];
            if read_full_at(&self.source.file, &mut probe, size)
                .map_err(|e| self.error(e.to_string()))?
                > 0
            {
                return Err(self.error(format!(
                    "the file grew during the upload (more than {size} bytes)"
                )));
            }
            return Ok(None);
        }
        let want = READ_BLOCK.min((size - self.total) as usize);
        let mut buf = BytesMut::zeroed(want);
        let n = read_full_at(&self.source.file, &mut buf, self.total)
            .map_err(|e| self.error(e.to_string()))?;
        if n == 0 {
            return Err(self.error(format!(
                "the file shrank during the upload: {} of {size} bytes read",
                self.total
            )));
        }
        buf.truncate(n);
        // Checked before the block goes out: a file changed under the reader
        // must never make a complete body (an image of torn bytes).
        let now = self
            .source
            .file
            .metadata()
            .map_err(|e| self.error(format!("stat: {e}")))?;
        if let Some(change) = self.source.stamp.change_to(&FileStamp::of(&now)) {
            return Err(self.error(change));
        }
        self.total += n as u64;
        Ok(Some(buf.freeze()))
    }
}

/// Reads from `offset` until `buf` is full or the file ends. Positional reads
/// (`pread`): a descriptor a client passed (`src_fd`) shares its offset with the
/// client, who may move it while the daemon reads, or hand it over mid-file.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
