//! Conversion of an image file to the format a cloud wants (`image_format:
//! raw` in clouds.yaml), with `qemu-img convert`, into a sparse staging file
//! under `state_dir/staging`.
//!
//! - Free space under the staging directory is checked first against the
//!   image's virtual size (the raw file's size, before sparseness):
//!   [`ConvertError::InsufficientSpace`] is the contract's `507
//!   insufficient_space`.
//! - qemu-img reads the file already opened and judged (through
//!   `/proc/<pid>/fd/<n>`), with its format named (`-f`): it never probes, and
//!   a file swapped after the judgement is not the one converted.
//! - The staging file is removed whatever happens: a failed or cancelled
//!   conversion (qemu-img is killed with the future) by [`StagingGuard`]; a
//!   finished one is opened and unlinked at once, so it lives only as long as
//!   its open [`StagedFile`] (the upload), and a crash leaves nothing behind
//!   but, at worst, a conversion cut short, which [`clean_staging`] removes at
//!   the next start.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::openstack::glance::DiskFormat;

/// The staging directory under `state_dir`.
const STAGING: &str = "staging";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConvertError {
    /// `507 insufficient_space`.
    #[error(
        "not enough space under {} to convert: the image needs {needed} bytes, {available} are free",
        dir.display()
    )]
    InsufficientSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    /// qemu-img refused or failed on the file (its message, shortened).
    #[error("qemu-img could not convert the file from {from} to {to}: {message}")]
    Failed {
        from: DiskFormat,
        to: DiskFormat,
        message: String,
    },
    /// A format qemu-img cannot read.
    #[error("a file of format {0} cannot be converted")]
    Unsupported(DiskFormat),
    /// A cloud wants a format the file cannot be converted to (`422
    /// unsafe_image`, before a job exists).
    #[error(
        "cloud '{cloud}' wants disk format {to} (its image_format in clouds.yaml), and a {from} \
         file cannot be converted to it: only conversion to raw, from qcow2, vmdk, vhd, vhdx \
         or vdi, is supported"
    )]
    NoConversion {
        cloud: String,
        from: DiskFormat,
        to: DiskFormat,
    },
    /// The staging directory could not be used, or qemu-img not run.
    #[error("staging under {}: {source}", dir.display())]
    Staging { dir: PathBuf, source: io::Error },
}

impl Clone for ConvertError {
    /// One conversion's failure is the failure of every cloud that wanted it.
    fn clone(&self) -> Self {
        match self {
            ConvertError::InsufficientSpace {
                dir,
                needed,
                available,
            } => ConvertError::InsufficientSpace {
                dir: dir.clone(),
                needed: *needed,
                available: *available,
            },
            ConvertError::Failed { from, to, message } => ConvertError::Failed {
                from: *from,
                to: *to,
                message: message.clone(),
            },
            ConvertError::Unsupported(format) => ConvertError::Unsupported(*format),
            ConvertError::NoConversion { cloud, from, to } => ConvertError::NoConversion {
                cloud: cloud.clone(),
                from: *from,
                to: *to,
            },
            ConvertError::Staging { dir, source } => ConvertError::Staging {
                dir: dir.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
        }
    }
}

/// `state_dir/staging`, where conversions write.
pub(crate) fn staging_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(STAGING)
}

/// At start: creates `state_dir/staging` (mode 0700) if missing, and removes
/// whatever a previous run left in it. Returns how many entries it removed.
pub(crate) fn clean_staging(state_dir: &Path) -> io::Result<usize> {
    let dir = staging_dir(state_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        // A symlink is removed, never followed.
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// A converted file: open, already unlinked (its space is freed when it is
/// closed, whatever happens to the daemon).
#[derive(Debug)]
pub(crate) struct StagedFile {
    /// Read by the upload like any source file.
    pub(crate) file: File,
    /// Where it was made, for messages (no longer there).
    pub(crate) path: PathBuf,
    /// Its size: the virtual size of the image it was converted from.
    pub(crate) size: u64,
}

/// Removes a staging file when dropped: a failed or cancelled conversion
/// leaves nothing.
#[derive(Debug)]
pub(crate) struct StagingGuard {
    path: PathBuf,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %self.path.display(), error = %e,
                "could not remove a staging file; the next start removes it"
            ),
        }
    }
}

/// Converts `source` (open, of format `from`, holding a disk of
/// `virtual_size` bytes) to a sparse raw file under `state_dir/staging`.
pub(crate) async fn to_raw(
    state_dir: &Path,
    source: &File,
    from: DiskFormat,
    virtual_size: u64,
) -> Result<StagedFile, ConvertError> {
    let driver = qemu_driver(from).ok_or(ConvertError::Unsupported(from))?;
    let dir = staging_dir(state_dir);
    let staging = |source: io::Error| ConvertError::Staging {
        dir: dir.clone(),
        source,
    };
    check_space(state_dir, virtual_size)?;
    let guard = StagingGuard {
        path: dir.join(format!("{}.raw", crate::secret::random_hex(16))),
    };
    let input = format!("/proc/{}/fd/{}", std::process::id(), source.as_raw_fd());
    let output = tokio::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", driver, "-O", "raw"])
        .arg(&input)
        .arg(&guard.path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(staging)?;
    if !output.status.success() {
        if String::from_utf8_lossy(&output.stderr).contains("No space left on device") {
            // Another writer took the space after the check.
            let available = free_space(&dir).unwrap_or(0);
            return Err(ConvertError::InsufficientSpace {
                dir,
                needed: virtual_size,
                available,
            });
        }
        return Err(ConvertError::Failed {
            from,
            to: DiskFormat::Raw,
            message: qemu_message(&output.stderr),
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&guard.path)
        .map_err(staging)?;
    let size = file.metadata().map_err(staging)?.len();
    let path = guard.path.clone();
    drop(guard);
    Ok(StagedFile { file, path, size })
}

/// Creates `state_dir/staging` if missing and checks that it can hold a raw
/// disk of `virtual_size` bytes (`507 insufficient_space` when not).
pub(crate) fn check_space(state_dir: &Path, virtual_size: u64) -> Result<(), ConvertError> {
    let dir = staging_dir(state_dir);
    let staging = |source: io::Error| ConvertError::Staging {
        dir: dir.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(staging)?;
    let available = free_space(&dir).map_err(staging)?;
    if available < virtual_size {
        return Err(ConvertError::InsufficientSpace {
            dir,
            needed: virtual_size,
            available,
        });
    }
    Ok(())
}

/// Whether a file of `format` can be converted to raw.
pub(crate) fn converts_to_raw(format: DiskFormat) -> bool {
    matches!(
        format,
        DiskFormat::Qcow2 | DiskFormat::Vmdk | DiskFormat::Vhd | DiskFormat::Vhdx | DiskFormat::Vdi
    )
}

/// qemu's name of a format (`vpc` for VHD); an ISO is raw bytes.
fn qemu_driver(format: DiskFormat) -> Option<&'static str> {
    match format {
        DiskFormat::Qcow2 => Some("qcow2"),
        DiskFormat::Vmdk => Some("vmdk"),
        DiskFormat::Vhd => Some("vpc"),
        DiskFormat::Vhdx => Some("vhdx"),
        DiskFormat::Vdi => Some("vdi"),
        DiskFormat::Raw | DiskFormat::Iso => Some("raw"),
        DiskFormat::Ami | DiskFormat::Ari | DiskFormat::Aki | DiskFormat::Ploop => None,
    }
}

/// qemu-img's first lines of error, at most 500 characters.
fn qemu_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    match text.char_indices().nth(500) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None if text.is_empty() => "no message".to_string(),
        None => text.to_string(),
    }
}

/// Bytes an unprivileged writer may still use under `dir` (statvfs).
fn free_space(dir: &Path) -> io::Result<u64> {
    let c_path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: `statvfs` is plain data, zeroed is a valid value; statvfs only writes it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests;
