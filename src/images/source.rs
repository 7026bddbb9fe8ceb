//! The image file: what it is (a regular file, its disk format, judged by
//! [`format`](super::format)), what tells that it changed, and the hashes
//! Glance may report of it. Reading it is [`upload::reader`](super::upload::reader).

use std::fs::File;
use std::os::fd::OwnedFd;
#[cfg(test)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{self, Inspection, UnsafeImage};
use crate::openstack::glance::{ContainerFormat, DiskFormat};

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("src_path '{0}' must be an absolute path")]
    NotAbsolute(PathBuf),
    #[error("src_path '{path}' is not allowed ({resolved}): {reason}")]
    NotAllowed {
        path: PathBuf,
        resolved: PathBuf,
        reason: String,
    },
    #[error("src_path '{path}': {reason}")]
    NotFound { path: PathBuf, reason: String },
    #[error("reading '{path}': {reason}")]
    Read { path: PathBuf, reason: String },
    /// The HTTP client stopped taking data (the upload failed on its side).
    #[error("the upload stopped taking data")]
    Abandoned,
    /// A passed descriptor (`src_fd`) that is not a regular file.
    #[error("src_fd {index} ({what}) is not a regular file: it is {kind}")]
    DescriptorNotFile {
        index: u32,
        what: String,
        kind: &'static str,
    },
    /// A passed descriptor (`src_fd`) that cannot be read.
    #[error("src_fd {index} ({what}) is not open for reading: {reason}")]
    DescriptorNotReadable {
        index: u32,
        what: String,
        reason: String,
    },
}

/// Which file a passed descriptor is: a retry that passes another descriptor of
/// the same, unchanged file is the same request (its job's idempotency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FileIdentity {
    /// The filesystem's device.
    dev: u64,
    /// The file on it.
    ino: u64,
    /// Its size: a file written since is another request.
    size: u64,
    /// Its modification time (seconds, nanoseconds), for the same reason.
    mtime: (i64, i64),
}

/// An open, regular image file.
#[derive(Debug)]
pub(crate) struct SourceFile {
    /// The resolved path, for messages.
    pub(crate) path: PathBuf,
    /// Open before anything is sent, so the file cannot be swapped afterwards.
    pub(crate) file: File,
    /// The size at open time; the upload declares it and checks it.
    pub(crate) size: u64,
    /// The file's size and times at open time: while it is read, any change
    /// means the bytes sent may mix the old file and the new one.
    pub(crate) stamp: FileStamp,
    /// What its content is (or why it is refused), judged at open time from
    /// its headers (where blocking reads are allowed: open runs on a blocking
    /// thread).
    inspection: Result<Inspection, UnsafeImage>,
}

/// What tells that a file was written: its size, modification and change times.
///
/// A write in place (size kept) moves the modification time and the change
/// time; a tool that restores the modification time still moves the change
/// time, which no one can set. The times have the kernel's clock-tick
/// granularity: a write in the same tick as the previous one can go unseen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// `None` when `now` is this stamp, else what changed, in words.
    pub(crate) fn change_to(&self, now: &FileStamp) -> Option<String> {
        if now.len < self.len {
            Some(format!(
                "the file shrank during the upload: {} bytes, {} at the start",
                now.len, self.len
            ))
        } else if now.len > self.len {
            Some(format!(
                "the file grew during the upload: {} bytes, {} at the start",
                now.len, self.len
            ))
        } else if now != self {
            Some(format!(
                "the file was modified during the upload (same size, {} bytes, but its {} \
                 moved): the bytes sent may mix its old and new contents",
                self.len,
                if now.modified != self.modified {
                    "modification time"
                } else {
                    "change time"
                }
            ))
        } else {
            None
        }
    }
}

impl SourceFile {
    /// An already opened file (see [`open_within`](super::src_path::open_within)):
    /// a directory, a FIFO or a device is `NotFound` (the contract's
    /// `file_not_found`).
    pub(crate) fn from_open(file: File, path: &Path) -> Result<SourceFile, SourceError> {
        let meta = file.metadata().map_err(|e| SourceError::NotFound {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if !meta.file_type().is_file() {
            return Err(SourceError::NotFound {
                path: path.to_path_buf(),
                reason: format!("not a regular file ({})", kind(&meta)),
            });
        }
        let inspection = format::inspect(&format::Image::new(&file, meta.len())).map_err(|e| {
            SourceError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            file,
            size: meta.len(),
            stamp: FileStamp::of(&meta),
            inspection,
        })
    }

    /// A descriptor a client passed (`src_fd` number `index`): it must be
    /// open for reading (`O_RDONLY` or `O_RDWR`, not `O_PATH`) and a regular
    /// file. No upload dir applies: the client could open it, and hands over
    /// only that. Blocking (`fstat`): call it off the async worker threads.
    pub(crate) fn from_descriptor(fd: OwnedFd, index: u32) -> Result<SourceFile, SourceError> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let what = describe_descriptor(&fd);
        let not_readable = |reason: String| SourceError::DescriptorNotReadable {
            index,
            what: what.clone(),
            reason,
        };
        let flags = fcntl(&fd, FcntlArg::F_GETFL)
            .map(OFlag::from_bits_retain)
            .map_err(|e| not_readable(format!("fcntl: {e}")))?;
        if flags.contains(OFlag::O_PATH) {
            return Err(not_readable(
                "it was opened with O_PATH; open the file with O_RDONLY".to_string(),
            ));
        }
        if flags & OFlag::O_ACCMODE == OFlag::O_WRONLY {
            return Err(not_readable(
                "it is open write-only; open the file with O_RDONLY".to_string(),
            ));
        }
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| not_readable(format!("fstat: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(SourceError::DescriptorNotFile {
                index,
                what,
                kind: kind(&meta),
            });
        }
        Self::from_open(file, Path::new(&what))
    }

    /// Which file this is (see [`FileIdentity`]), as it was when opened.
    pub(crate) fn identity(&self) -> Result<FileIdentity, SourceError> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().map_err(|e| SourceError::Read {
            path: self.path.clone(),
            reason: format!("fstat: {e}"),
        })?;
        Ok(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: self.size,
            mtime: self.stamp.modified,
        })
    }

    /// A second handle on the same open file (same size, stamp and format),
    /// for reading it again once the current read is over: the two share
    /// their offset, so read one at a time ([`SourceFile::duplicate_at_start`]).
    pub(crate) fn duplicate(&self) -> Result<SourceFile, SourceError> {
        let file = self.file.try_clone().map_err(|e| SourceError::Read {
            path: self.path.clone(),
            reason: format!("duplicating the descriptor: {e}"),
        })?;
        Ok(SourceFile {
            path: self.path.clone(),
            file,
            size: self.size,
            stamp: self.stamp,
            inspection: self.inspection.clone(),
        })
    }

    /// [`SourceFile::duplicate`], positioned at the file's start: a retry's
    /// read of the whole file again.
    pub(crate) fn duplicate_at_start(&self) -> Result<SourceFile, SourceError> {
        use std::io::Seek;
        let mut again = self.duplicate()?;
        again.file.rewind().map_err(|e| SourceError::Read {
            path: self.path.clone(),
            reason: format!("seek: {e}"),
        })?;
        Ok(again)
    }

    /// Opens a path with no judgement of where it is (tests of the streaming).
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> Result<SourceFile, SourceError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| SourceError::NotFound {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Self::from_open(file, path)
    }

    /// The disk format its content says, as read when the file was opened (no
    /// I/O here: this runs on the async workers); `raw` for a file
    /// [`judge`](Self::judge) refuses.
    pub(crate) fn detect_disk_format(&self) -> DiskFormat {
        self.inspection
            .as_ref()
            .map_or(DiskFormat::Raw, |found| found.format)
    }

    /// The size of the disk the file holds (its header's word where its format
    /// has one, else its length); `None` for a refused file.
    pub(crate) fn virtual_size(&self) -> Option<u64> {
        self.inspection
            .as_ref()
            .ok()
            .map(|found| found.virtual_size)
    }

    /// The disk format to give Glance for a request's `disk_format` (`None`:
    /// the detected one), or why the file is refused (`422 unsafe_image`).
    pub(crate) fn judge(
        &self,
        declared: Option<DiskFormat>,
        container: ContainerFormat,
    ) -> Result<DiskFormat, UnsafeImage> {
        let found = self.inspection.as_ref().map_err(Clone::clone)?;
        format::judge(found, declared, container)
    }
}

/// A passed descriptor in messages and logs: where `/proc` says it leads (the
/// caller's own file), or its number here.
fn describe_descriptor(fd: &OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::read_link(&link) {
        Ok(target) => target.display().to_string(),
        Err(_) => format!("descriptor {}", fd.as_raw_fd()),
    }
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "not a file"
    }
}

/// The hash Glance reports as `os_hash_algo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashAlgo {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgo {
    pub(crate) fn parse(name: &str) -> Option<HashAlgo> {
        match name {
            "sha256" => Some(HashAlgo::Sha256),
            "sha384" => Some(HashAlgo::Sha384),
            "sha512" => Some(HashAlgo::Sha512),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha384 => "sha384",
            HashAlgo::Sha512 => "sha512",
        }
    }

    pub(crate) fn algorithm(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            HashAlgo::Sha256 => &aws_lc_rs::digest::SHA256,
            HashAlgo::Sha384 => &aws_lc_rs::digest::SHA384,
            HashAlgo::Sha512 => &aws_lc_rs::digest::SHA512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_with(path: &Path, options: &mut std::fs::OpenOptions) -> OwnedFd {
        options.open(path).unwrap().into()
    }

    #[test]
    fn a_passed_descriptor_must_be_a_readable_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.img");
        std::fs::write(&f, b"RAW! rest").unwrap();
        let read = open_with(&f, std::fs::OpenOptions::new().read(true));
        let source = SourceFile::from_descriptor(read, 0).unwrap();
        assert_eq!(source.size, 9);
        assert_eq!(source.detect_disk_format(), DiskFormat::Raw);
        assert!(source.path.ends_with("f.img"), "{}", source.path.display());
        let rw = open_with(&f, std::fs::OpenOptions::new().read(true).write(true));
        assert!(SourceFile::from_descriptor(rw, 0).is_ok());

        let write_only = open_with(&f, std::fs::OpenOptions::new().write(true));
        let err = SourceFile::from_descriptor(write_only, 1).unwrap_err();
        assert!(matches!(
            err,
            SourceError::DescriptorNotReadable { index: 1, .. }
        ));
        assert!(err.to_string().contains("write-only"), "{err}");

        let o_path = open_with(
            &f,
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH),
        );
        let err = SourceFile::from_descriptor(o_path, 0).unwrap_err();
        assert!(err.to_string().contains("O_PATH"), "{err}");

        let a_dir = open_with(dir.path(), std::fs::OpenOptions::new().read(true));
        let err = SourceFile::from_descriptor(a_dir, 2).unwrap_err();
        assert!(matches!(
            err,
            SourceError::DescriptorNotFile { index: 2, .. }
        ));
        assert!(err.to_string().contains("a directory"), "{err}");

        let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = SourceFile::from_descriptor(sock.into(), 0).unwrap_err();
        assert!(err.to_string().contains("a socket"), "{err}");
    }

    #[test]
    fn two_descriptors_of_one_unchanged_file_are_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.img");
        std::fs::write(&f, b"one").unwrap();
        let open = || {
            let fd = open_with(&f, std::fs::OpenOptions::new().read(true));
            SourceFile::from_descriptor(fd, 0)
                .unwrap()
                .identity()
                .unwrap()
        };
        let first = open();
        assert_eq!(open(), first);
        std::fs::write(&f, b"other bytes").unwrap();
        assert_ne!(open(), first, "a written file is another request");
    }

    #[test]
    fn the_file_is_judged_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&q)
            .arg("1M")
            .status()
            .unwrap();
        assert!(status.success());
        let source = SourceFile::open(&q).unwrap();
        assert_eq!(source.detect_disk_format(), DiskFormat::Qcow2);
        assert_eq!(source.virtual_size(), Some(1 << 20));
        let bare = ContainerFormat::Bare;
        assert_eq!(source.judge(None, bare), Ok(DiskFormat::Qcow2));
        assert!(matches!(
            source.judge(Some(DiskFormat::Raw), bare),
            Err(UnsafeImage::Contradicts { .. })
        ));
        let r = dir.path().join("r");
        std::fs::write(&r, b"QF").unwrap();
        let source = SourceFile::open(&r).unwrap();
        assert_eq!(source.detect_disk_format(), DiskFormat::Raw);
        assert_eq!(
            source.judge(Some(DiskFormat::Raw), bare),
            Ok(DiskFormat::Raw)
        );
        let cut = dir.path().join("cut");
        std::fs::write(&cut, b"QFI\xfb\0\0\0\x03rest").unwrap();
        let source = SourceFile::open(&cut).unwrap();
        assert!(matches!(
            source.judge(None, bare),
            Err(UnsafeImage::Malformed {
                format: "qcow2",
                ..
            })
        ));
    }
}
