//! What start-up creates and checks on disk: the state dir, the API token file,
//! the daemon id, and the resolved upload dirs.
//!
//! [`prepare_runtime`] does the contract's start-up work once, for `serve`;
//! [`client_api_token`] only reads what the daemon wrote, for the CLI.
//!
//! All of it is blocking file work (reads, creates, fsyncs): the daemon calls
//! it from a blocking thread (`spawn_blocking`), at start-up and on `SIGHUP`,
//! never on an async worker.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::secret::{random_hex, Secret};

/// The name of the file in `state_dir` that holds this daemon's id.
pub(crate) const DAEMON_ID_FILE: &str = "daemon-id";

/// Everything that can go wrong with the files the daemon keeps.
///
/// Each message names the key and the path, because the reader is an operator
/// looking at `journalctl`, not at the code.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or directory the daemon keeps could not be created, read or inspected.
    #[error("{key} {}: cannot {action}: {cause}", path.display())]
    Io {
        /// The config key that names the path (`state_dir`, `api_token_file`, ...).
        key: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// What the daemon tried to do ("create", "read", ...).
        action: &'static str,
        /// Why it failed.
        cause: io::Error,
    },

    /// The API token file can be read by other local users, who could then
    /// drive the daemon.
    #[error(
        "api_token_file {path} is readable by group or others (mode {mode:04o}): chmod 600 {path}",
        path = path.display()
    )]
    TokenFileTooOpen {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A file that must hold a value (the API token, the daemon id) is empty.
    #[error("{key} {} is empty", path.display())]
    EmptyFile {
        /// The config key (or file role) that names the path.
        key: &'static str,
        /// The empty file.
        path: PathBuf,
    },

    /// A path that must be a directory is something else.
    #[error("{key} {} exists and is not a directory", path.display())]
    NotADirectory {
        /// The config key that names the path (`state_dir`, `upload_dirs`).
        key: &'static str,
        /// The path as configured.
        path: PathBuf,
    },
}

/// What [`prepare_runtime`] made or found: the values `serve` needs from disk.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeFiles {
    /// The bearer token clients must present.
    pub(crate) api_token: Secret,
    /// This daemon's id, put on the images it creates so the reaper deletes
    /// only its own abandoned uploads.
    pub(crate) daemon_id: String,
    /// `upload_dirs`, each canonicalized (symlinks followed), so a `src_path`
    /// is checked against the real location.
    pub(crate) upload_dirs: Vec<PathBuf>,
}

/// Does the contract's start-up work: creates the state dir (0700), the API
/// token file (0600, random token) and the daemon id when missing, refuses a
/// token file readable by others, and resolves `upload_dirs` (creating missing ones).
pub(crate) fn prepare_runtime(config: &Config) -> Result<RuntimeFiles, RuntimeError> {
    ensure_private_dir("state_dir", &config.state_dir)?;
    let api_token = api_token_or_create(&config.api_token_file)?;
    let daemon_id = daemon_id_or_create(&config.state_dir.join(DAEMON_ID_FILE))?;
    Ok(RuntimeFiles {
        api_token: Secret::new(api_token),
        daemon_id,
        upload_dirs: resolve_upload_dirs(&config.upload_dirs)?,
    })
}

/// `upload_dirs` as start-up (and a reload) resolves them: each created (0750)
/// when missing and canonicalized, duplicates dropped.
pub(crate) fn resolve_upload_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, RuntimeError> {
    let mut upload_dirs: Vec<PathBuf> = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let resolved = resolve_upload_dir(dir)?;
        if !upload_dirs.contains(&resolved) {
            upload_dirs.push(resolved);
        }
    }
    Ok(upload_dirs)
}

/// The API token of an existing `api_token_file`, for a reload: unlike start-up
/// it creates nothing (a token file that went missing is a mistake to report,
/// not a reason to mint a token no client knows), and refuses what start-up
/// refuses (a file others can read, an empty one).
pub(crate) fn existing_api_token(path: &Path) -> Result<Secret, RuntimeError> {
    check_token_file_mode(path)?;
    read_non_empty("api_token_file", path).map(Secret::new)
}

/// Reads the API token for a client subcommand.
///
/// Unlike [`prepare_runtime`] it creates nothing and checks no modes: a client
/// only needs to read what the daemon wrote (and may run as another user who
/// was granted access on purpose).
pub(crate) fn client_api_token(config: &Config) -> Result<Secret, RuntimeError> {
    read_non_empty("api_token_file", &config.api_token_file).map(Secret::new)
}

/// Creates `dir` with mode 0700 when missing; an existing directory is left as
/// the operator made it.
fn ensure_private_dir(key: &'static str, dir: &Path) -> Result<(), RuntimeError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(RuntimeError::NotADirectory {
            key,
            path: dir.to_path_buf(),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let io_err = |cause| RuntimeError::Io {
                key,
                path: dir.to_path_buf(),
                action: "create the directory",
                cause,
            };
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
            // The umask may have narrowed the mode; set it exactly on the leaf.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)
        }
        Err(cause) => Err(RuntimeError::Io {
            key,
            path: dir.to_path_buf(),
            action: "inspect",
            cause,
        }),
    }
}

/// The API token: read from `path` when present (refusing a file others can
/// read), else created with a fresh random value.
fn api_token_or_create(path: &Path) -> Result<String, RuntimeError> {
    const KEY: &str = "api_token_file";
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_private_dir(KEY, parent)?;
    }
    if create_with_random_value(KEY, path, 32)? {
        tracing::info!(path = %path.display(), "created a new API token file");
    }
    check_token_file_mode(path)?;
    read_non_empty(KEY, path)
}

/// Refuses a token file that group or others can read.
fn check_token_file_mode(path: &Path) -> Result<(), RuntimeError> {
    let meta = fs::metadata(path).map_err(|cause| RuntimeError::Io {
        key: "api_token_file",
        path: path.to_path_buf(),
        action: "inspect",
        cause,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(RuntimeError::TokenFileTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// This daemon's id from `path`, created with a fresh random value when missing.
fn daemon_id_or_create(path: &Path) -> Result<String, RuntimeError> {
    const KEY: &str = "daemon-id file";
    create_with_random_value(KEY, path, 16)?;
    read_non_empty(KEY, path)
}

/// Creates `path` (mode 0600) holding `bytes` random bytes in hex and a
/// newline, unless it exists. Returns whether it created the file.
///
/// `create_new` makes "exists?" and "create" one step, so two starts at once
/// cannot both write (and one overwrite the other's token).
fn create_with_random_value(
    key: &'static str,
    path: &Path,
    bytes: usize,
) -> Result<bool, RuntimeError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(cause) => {
            return Err(RuntimeError::Io {
                key,
                path: path.to_path_buf(),
                action: "create",
                cause,
            })
        }
    };
    let value = random_hex(bytes);
    let written = file
        .write_all(format!("{value}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(cause) = written {
        // A half-written file would be read as the value at the next start.
        let _ = fs::remove_file(path);
        return Err(RuntimeError::Io {
            key,
            path: path.to_path_buf(),
            action: "write",
            cause,
        });
    }
    Ok(true)
}

/// The file's content without surrounding whitespace; an empty file is an error.
fn read_non_empty(key: &'static str, path: &Path) -> Result<String, RuntimeError> {
    let text = fs::read_to_string(path).map_err(|cause| RuntimeError::Io {
        key,
        path: path.to_path_buf(),
        action: "read",
        cause,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(RuntimeError::EmptyFile {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(value.to_string())
}

/// An upload dir, created (0750) when missing, then canonicalized.
fn resolve_upload_dir(dir: &Path) -> Result<PathBuf, RuntimeError> {
    const KEY: &str = "upload_dirs";
    let io_err = |action, cause| RuntimeError::Io {
        key: KEY,
        path: dir.to_path_buf(),
        action,
        cause,
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(RuntimeError::NotADirectory {
                key: KEY,
                path: dir.to_path_buf(),
            })
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|cause| io_err("create the directory", cause))?;
        }
        Err(cause) => return Err(io_err("inspect", cause)),
    }
    fs::canonicalize(dir).map_err(|cause| io_err("resolve", cause))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A config whose files all live under `root`.
    fn config_in(root: &Path) -> Config {
        Config {
            state_dir: root.join("state"),
            api_token_file: root.join("state/api-token"),
            upload_dirs: vec![root.join("images")],
            ..Config::default()
        }
    }

    #[test]
    fn prepare_runtime_creates_private_state_dir_and_token_and_reuses_them() {
        let root = tempfile::tempdir().unwrap();
        let config = config_in(root.path());

        let first = prepare_runtime(&config).unwrap();
        assert_eq!(mode_of(&config.state_dir), 0o700);
        assert_eq!(mode_of(&config.api_token_file), 0o600);
        assert_eq!(mode_of(&config.state_dir.join(DAEMON_ID_FILE)), 0o600);
        let token = first.api_token.expose().to_string();
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        let on_disk = fs::read_to_string(&config.api_token_file).unwrap();
        assert_eq!(on_disk, format!("{token}\n"));
        assert_eq!(first.daemon_id.len(), 32);

        let second = prepare_runtime(&config).unwrap();
        assert_eq!(second.api_token.expose(), token);
        assert_eq!(second.daemon_id, first.daemon_id);
        assert_eq!(client_api_token(&config).unwrap().expose(), token);
    }

    #[test]
    fn prepare_runtime_uses_an_existing_token_trimmed() {
        let root = tempfile::tempdir().unwrap();
        let config = config_in(root.path());
        fs::create_dir_all(&config.state_dir).unwrap();
        fs::write(&config.api_token_file, "  operator-chosen \n").unwrap();
        fs::set_permissions(&config.api_token_file, fs::Permissions::from_mode(0o600)).unwrap();
        let files = prepare_runtime(&config).unwrap();
        assert_eq!(files.api_token.expose(), "operator-chosen");
    }

    #[test]
    fn prepare_runtime_refuses_a_token_file_readable_by_others() {
        let root = tempfile::tempdir().unwrap();
        let config = config_in(root.path());
        fs::create_dir_all(&config.state_dir).unwrap();
        fs::write(&config.api_token_file, "secret-token\n").unwrap();
        fs::set_permissions(&config.api_token_file, fs::Permissions::from_mode(0o644)).unwrap();
        let err = prepare_runtime(&config).unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::TokenFileTooOpen { mode: 0o644, .. }
        ));
        let message = err.to_string();
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains("api-token"), "{message}");
        assert!(!message.contains("secret-token"), "{message}");
    }

    #[test]
    fn prepare_runtime_refuses_an_empty_token_file() {
        let root = tempfile::tempdir().unwrap();
        let config = config_in(root.path());
        fs::create_dir_all(&config.state_dir).unwrap();
        fs::write(&config.api_token_file, "\n").unwrap();
        fs::set_permissions(&config.api_token_file, fs::Permissions::from_mode(0o600)).unwrap();
        let err = prepare_runtime(&config).unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::EmptyFile {
                key: "api_token_file",
                ..
            }
        ));
    }

    #[test]
    fn prepare_runtime_creates_upload_dirs_and_resolves_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real-images");
        fs::create_dir(&real).unwrap();
        let link = root.path().join("link-images");
        symlink(&real, &link).unwrap();
        let missing = root.path().join("new/images");
        let config = Config {
            upload_dirs: vec![link, missing.clone()],
            ..config_in(root.path())
        };

        let files = prepare_runtime(&config).unwrap();
        assert!(missing.is_dir());
        assert_eq!(mode_of(&missing), 0o750);
        assert_eq!(
            files.upload_dirs,
            vec![
                fs::canonicalize(&real).unwrap(),
                fs::canonicalize(&missing).unwrap()
            ]
        );
    }

    #[test]
    fn prepare_runtime_refuses_an_upload_dir_that_is_a_file() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let config = Config {
            upload_dirs: vec![file],
            ..config_in(root.path())
        };
        let err = prepare_runtime(&config).unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::NotADirectory {
                key: "upload_dirs",
                ..
            }
        ));
        assert!(err.to_string().contains("not-a-dir"));
    }

    #[test]
    fn a_reload_reads_an_existing_token_and_creates_none() {
        let root = tempfile::tempdir().unwrap();
        let config = config_in(root.path());
        let missing = existing_api_token(&config.api_token_file).unwrap_err();
        assert!(matches!(
            missing,
            RuntimeError::Io {
                action: "inspect",
                ..
            }
        ));
        assert!(!config.api_token_file.exists());

        fs::create_dir_all(&config.state_dir).unwrap();
        fs::write(&config.api_token_file, "new-token\n").unwrap();
        fs::set_permissions(&config.api_token_file, fs::Permissions::from_mode(0o644)).unwrap();
        let open = existing_api_token(&config.api_token_file).unwrap_err();
        assert!(matches!(open, RuntimeError::TokenFileTooOpen { .. }));
        fs::set_permissions(&config.api_token_file, fs::Permissions::from_mode(0o600)).unwrap();
        let token = existing_api_token(&config.api_token_file).unwrap();
        assert_eq!(token.expose(), "new-token");
        fs::write(&config.api_token_file, " \n").unwrap();
        let empty = existing_api_token(&config.api_token_file).unwrap_err();
        assert!(matches!(empty, RuntimeError::EmptyFile { .. }));
    }

    #[test]
    fn client_api_token_does_not_create_the_file() {
        let root = tempfile::tempdir().unwrap();
        let config = config_in(root.path());
        let err = client_api_token(&config).unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::Io {
                key: "api_token_file",
                ..
            }
        ));
        assert!(!config.api_token_file.exists());
    }
}
