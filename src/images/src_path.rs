//! Judging and opening `src_path` as one step: the file read is the file judged to
//! be inside `upload_dirs`.
//!
//! Judging a path (follow its symlinks, compare with the upload dirs) and opening
//! it walk the path twice; between the two, a directory on the way could be
//! swapped for a symlink to somewhere else. So the judgement yields the canonical
//! path *relative to the upload dir it lies in*, which has no symlink at all, and
//! the file is then opened from that directory's descriptor one component at a
//! time with `O_NOFOLLOW`: any symlink that appeared since is refused, and nothing
//! outside the directory can be reached. (`openat2` with `RESOLVE_BENEATH` would do
//! the same in one call; the walk needs no kernel newer than 2.6 and no seccomp
//! allowance for a new system call.)
//!
//! Hard links: a file inside an upload dir may be a hard link to a file that lives
//! outside. The kernel's `protected_hardlinks` (on by default) already stops users
//! from linking files they could not read and write themselves, but the daemon
//! does not rely on it: a file with several links is accepted only when every link
//! is found inside the upload dirs.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::source::{SourceError, SourceFile};

/// Most directory entries looked at when counting a file's hard links.
const MAX_LINK_SCAN: usize = 100_000;

/// `path` with symlinks followed as far as it exists, and the rest normalised by
/// hand, so that a path that does not exist is still judged by where it would be:
/// the contract decides `path_not_allowed` before `file_not_found`. A symlink that
/// leads nowhere (dangling) is refused: where it would lead is not a fact.
pub(crate) fn resolve(path: &Path) -> Result<PathBuf, SourceError> {
    if !path.is_absolute() {
        return Err(SourceError::NotAbsolute(path.to_path_buf()));
    }
    // `resolved` stays canonical (no symlinks) while it exists, so `..` is a pop.
    let mut resolved = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => {
                let next = resolved.join(name);
                match next.canonicalize() {
                    Ok(real) => resolved = real,
                    Err(_) if is_symlink(&next) => {
                        return Err(SourceError::NotAllowed {
                            path: path.to_path_buf(),
                            resolved: next,
                            reason: "passes through a dangling symlink".to_string(),
                        })
                    }
                    Err(_) => resolved = next,
                }
            }
            Component::ParentDir => {
                resolved.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(resolved)
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The upload dir a resolved path lies in (strictly inside), and the path below it.
fn within<'a>(resolved: &'a Path, upload_dirs: &'a [PathBuf]) -> Option<(&'a Path, &'a Path)> {
    upload_dirs.iter().find_map(|dir| {
        let rest = resolved.strip_prefix(dir).ok()?;
        (!rest.as_os_str().is_empty()).then_some((dir.as_path(), rest))
    })
}

/// Judges `path` against the (canonical) `upload_dirs` and opens it, as one step.
/// Blocking: call it off the async worker threads.
pub(crate) fn open_within(path: &Path, upload_dirs: &[PathBuf]) -> Result<SourceFile, SourceError> {
    let resolved = resolve(path)?;
    let not_allowed = |reason: &str| SourceError::NotAllowed {
        path: path.to_path_buf(),
        resolved: resolved.clone(),
        reason: reason.to_string(),
    };
    let Some((dir, relative)) = within(&resolved, upload_dirs) else {
        return Err(not_allowed("outside the upload directories"));
    };
    let file = open_beneath(dir, relative).map_err(|failure| match failure {
        Failure::Escaped => not_allowed("a directory on the way changed into a symlink"),
        Failure::Missing(reason) => SourceError::NotFound {
            path: path.to_path_buf(),
            reason,
        },
    })?;
    let source = SourceFile::from_open(file, &resolved)?;
    check_hard_links(&source.file, upload_dirs).map_err(|reason| not_allowed(&reason))?;
    Ok(source)
}

/// Why [`open_beneath`] failed.
#[derive(Debug)]
enum Failure {
    /// A component is a symlink (it was not when the path was judged).
    Escaped,
    /// A component is missing, or cannot be opened.
    Missing(String),
}

/// Opens `relative` (canonical: no symlink, no `..`) below `dir`, one component at
/// a time, never following a symlink.
fn open_beneath(dir: &Path, relative: &Path) -> Result<File, Failure> {
    let mut current = File::open(dir).map_err(|e| Failure::Missing(e.to_string()))?;
    let mut names = relative.components().peekable();
    while let Some(component) = names.next() {
        let Component::Normal(name) = component else {
            return Err(Failure::Escaped);
        };
        let last = names.peek().is_none();
        let flags = if last {
            libc::O_RDONLY | libc::O_NONBLOCK
        } else {
            libc::O_PATH | libc::O_DIRECTORY
        };
        current = openat_nofollow(&current, name, flags)?;
    }
    Ok(current)
}

fn openat_nofollow(dir: &File, name: &OsStr, flags: libc::c_int) -> Result<File, Failure> {
    let c_name = CString::new(name.as_bytes())
        .map_err(|_| Failure::Missing("the path contains a NUL byte".to_string()))?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open descriptor and `c_name` a NUL-terminated string;
    // the returned descriptor, when valid, is owned by the new `File` alone.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c_name.as_ptr(), flags) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
        return Ok(unsafe { File::from_raw_fd(fd) });
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // O_NOFOLLOW on a symlink: ELOOP (last component), ENOTDIR (with O_DIRECTORY).
        Some(libc::ELOOP) => Err(Failure::Escaped),
        Some(libc::ENOTDIR) if is_symlink_at(dir, &c_name) => Err(Failure::Escaped),
        _ => Err(Failure::Missing(err.to_string())),
    }
}

fn is_symlink_at(dir: &File, name: &CString) -> bool {
    // SAFETY: `stat` is plain data, zeroed is a valid value; fstatat only writes it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, a valid out pointer.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    rc == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFLNK
}

/// A file with more than one link is accepted only when all its links are inside
/// the upload dirs (found by a bounded walk of those dirs).
fn check_hard_links(file: &File, upload_dirs: &[PathBuf]) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let links = meta.nlink();
    if links <= 1 {
        return Ok(());
    }
    let mut found = 0u64;
    let mut budget = MAX_LINK_SCAN;
    for dir in upload_dirs {
        found += count_links(dir, meta.dev(), meta.ino(), &mut budget);
    }
    if found >= links {
        Ok(())
    } else {
        Err(format!(
            "the file has {links} hard links and only {found} of them are inside the upload directories"
        ))
    }
}

/// How many entries below `dir` (symlinks not followed) are the file `(dev, ino)`.
fn count_links(dir: &Path, dev: u64, ino: u64, budget: &mut usize) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut found = 0;
    for entry in entries.flatten() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            found += count_links(&entry.path(), dev, ino, budget);
        } else if meta.dev() == dev && meta.ino() == ino {
            found += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tempdir with `images/` (the upload dir) and a file outside it.
    struct Tree {
        _dir: tempfile::TempDir,
        root: PathBuf,
        images: PathBuf,
    }

    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let images = root.join("images");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::write(images.join("sub/x.img"), b"inside").unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        std::fs::write(root.join("outside/x.img"), b"secret").unwrap();
        Tree {
            _dir: dir,
            root,
            images,
        }
    }

    fn dirs(t: &Tree) -> Vec<PathBuf> {
        vec![t.images.clone()]
    }

    fn read(source: SourceFile) -> Vec<u8> {
        let mut buf = vec![0; source.size as usize];
        std::os::unix::fs::FileExt::read_exact_at(&source.file, &mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn missing_paths_are_judged_by_where_they_would_be() {
        let t = tree();
        let inside = resolve(&t.images.join("nope/../x.img")).unwrap();
        assert_eq!(inside, t.images.join("x.img"));
        assert!(within(&inside, &dirs(&t)).is_some());
        let outside = resolve(&t.images.join("../../etc/shadow-missing")).unwrap();
        assert!(within(&outside, &dirs(&t)).is_none());
        assert!(within(&t.images, &dirs(&t)).is_none(), "the dir is no file");
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(matches!(
            resolve(Path::new("x.img")),
            Err(SourceError::NotAbsolute(_))
        ));
    }

    #[test]
    fn a_file_inside_is_opened_and_read() {
        let t = tree();
        let source = open_within(&t.images.join("sub/x.img"), &dirs(&t)).unwrap();
        assert_eq!(read(source), b"inside");
    }

    #[test]
    fn a_symlink_inside_to_a_file_inside_is_followed() {
        let t = tree();
        std::os::unix::fs::symlink(t.images.join("sub/x.img"), t.images.join("l.img")).unwrap();
        let source = open_within(&t.images.join("l.img"), &dirs(&t)).unwrap();
        assert_eq!(read(source), b"inside");
    }

    #[test]
    fn a_symlink_out_of_the_upload_dir_is_not_allowed() {
        let t = tree();
        std::os::unix::fs::symlink(t.root.join("outside/x.img"), t.images.join("l.img")).unwrap();
        let err = open_within(&t.images.join("l.img"), &dirs(&t)).unwrap_err();
        assert!(matches!(err, SourceError::NotAllowed { .. }), "{err}");
    }

    #[test]
    fn a_dangling_symlink_on_the_way_is_not_allowed() {
        let t = tree();
        std::os::unix::fs::symlink(t.root.join("gone"), t.images.join("dangling")).unwrap();
        let err = open_within(&t.images.join("dangling/x.img"), &dirs(&t)).unwrap_err();
        assert!(err.to_string().contains("dangling"), "{err}");
        assert!(matches!(err, SourceError::NotAllowed { .. }));
    }

    #[test]
    fn a_missing_file_inside_is_not_found() {
        let t = tree();
        let err = open_within(&t.images.join("sub/none.img"), &dirs(&t)).unwrap_err();
        assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    }

    /// The swap between judging and opening, made deterministic: the path was
    /// judged (canonical `sub/x.img` below the upload dir), then `sub` became a
    /// symlink to a directory outside holding a file of the same name.
    #[test]
    fn a_directory_swapped_for_a_symlink_after_judging_is_refused() {
        let t = tree();
        let judged = resolve(&t.images.join("sub/x.img")).unwrap();
        let (dir, relative) = within(&judged, &dirs(&t))
            .map(|(d, r)| (d.to_path_buf(), r.to_path_buf()))
            .unwrap();
        std::fs::rename(t.images.join("sub"), t.root.join("old-sub")).unwrap();
        std::os::unix::fs::symlink(t.root.join("outside"), t.images.join("sub")).unwrap();
        assert!(matches!(
            open_beneath(&dir, &relative),
            Err(Failure::Escaped)
        ));
        // The last component swapped for a symlink is refused the same way.
        std::fs::remove_file(t.images.join("sub")).unwrap();
        std::fs::create_dir(t.images.join("sub")).unwrap();
        std::os::unix::fs::symlink(t.root.join("outside/x.img"), t.images.join("sub/x.img"))
            .unwrap();
        assert!(matches!(
            open_beneath(&dir, &relative),
            Err(Failure::Escaped)
        ));
    }

    #[test]
    fn a_hard_link_to_a_file_outside_is_not_allowed() {
        let t = tree();
        std::fs::hard_link(t.root.join("outside/x.img"), t.images.join("h.img")).unwrap();
        let err = open_within(&t.images.join("h.img"), &dirs(&t)).unwrap_err();
        assert!(err.to_string().contains("hard links"), "{err}");
        assert!(matches!(err, SourceError::NotAllowed { .. }));
    }

    #[test]
    fn hard_links_that_stay_inside_are_accepted() {
        let t = tree();
        std::fs::hard_link(t.images.join("sub/x.img"), t.images.join("h.img")).unwrap();
        let source = open_within(&t.images.join("h.img"), &dirs(&t)).unwrap();
        assert_eq!(read(source), b"inside");
    }

    #[test]
    fn directories_and_fifos_inside_are_not_files() {
        let t = tree();
        let err = open_within(&t.images.join("sub"), &dirs(&t)).unwrap_err();
        assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
        let fifo = t.images.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_within(&fifo, &dirs(&t)).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
    }
}
