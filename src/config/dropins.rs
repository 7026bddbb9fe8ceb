//! Drop-ins: `config.d/*.yaml` beside the config file, read after it.
//!
//! The package ships `config.yaml` (its defaults, a dpkg conffile); a charm
//! writes its own settings to a drop-in (`config.d/50-charm.yaml`), which no
//! package owns, so a reinstall or an upgrade never asks about it nor replaces
//! it. Rules:
//! - the files are read in the lexical order of their names, after
//!   `config.yaml`; only names ending in `.yaml` count (an editor's `~` or
//!   `.dpkg-old` file does not);
//! - each file alone is checked as a config (an unknown key, or a bad value,
//!   is refused naming that file and its line);
//! - a key in a later file replaces the whole value of the earlier one (a
//!   list is replaced, not appended to).

use std::fs;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::{Config, ConfigError};

/// The drop-in directory of the config file at `config`.
pub(crate) fn dir_of(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("config.d")
}

/// The drop-ins beside `config`, in the order they apply; none when the
/// directory is missing.
pub(crate) fn list(config: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = dir_of(config);
    let read_err = |cause| ConfigError::Read {
        path: dir.clone(),
        cause,
    };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "yaml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The config of `main` (its text, when the file exists) with `dropins`
/// applied over it, each file checked alone first.
pub(crate) fn layered(
    main: Option<(&Path, &str)>,
    dropins: &[PathBuf],
) -> Result<Config, ConfigError> {
    let mut merged = Mapping::new();
    let mut layers: Vec<(PathBuf, String)> = Vec::new();
    if let Some((path, text)) = main {
        layers.push((path.to_path_buf(), text.to_string()));
    }
    for path in dropins {
        let text = fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.clone(),
            cause,
        })?;
        layers.push((path.clone(), text));
    }
    for (path, text) in &layers {
        Config::from_yaml(text, path)?;
        // Checked above: the file is a mapping, or empty.
        if let Ok(Value::Mapping(mapping)) = serde_yaml::from_str::<Value>(text) {
            for (key, value) in mapping {
                merged.insert(key, value);
            }
        }
    }
    let origin = dropins.last().cloned().unwrap_or_default();
    let text = serde_yaml::to_string(&Value::Mapping(merged)).map_err(|e| ConfigError::Syntax {
        path: origin.clone(),
        reason: e.to_string(),
    })?;
    Config::from_yaml(&text, &origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config.yaml` holding `main`, and `config.d/NAME` holding each text.
    fn tree(main: &str, dropins: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, main).unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        for (name, text) in dropins {
            std::fs::write(dir.path().join("config.d").join(name), text).unwrap();
        }
        (dir, config)
    }

    #[test]
    fn later_files_replace_keys_in_name_order_and_only_yaml_files_count() {
        let (_dir, config) = tree(
            "max_concurrent_uploads: 2\nupload_dirs: [/srv/a, /srv/b]\nlisten: 127.0.0.1:1\n",
            &[
                (
                    "50-charm.yaml",
                    "upload_dirs: [/srv/charm]\nmax_concurrent_uploads: 5\n",
                ),
                ("90-operator.yaml", "max_concurrent_uploads: 7\n"),
                (
                    "10-early.yaml",
                    "max_concurrent_uploads: 9\nlisten: 127.0.0.1:2\n",
                ),
                ("60-ignored.yaml.dpkg-old", "max_concurrent_uploads: 64\n"),
                ("70-ignored.yaml~", "unknown: 1\n"),
            ],
        );
        let loaded = Config::load(&config).unwrap();
        assert_eq!(loaded.max_concurrent_uploads, 7);
        assert_eq!(loaded.upload_dirs, vec![PathBuf::from("/srv/charm")]);
        assert_eq!(loaded.listen.to_string(), "127.0.0.1:2");
    }

    #[test]
    fn a_dropin_with_an_unknown_key_or_a_bad_value_is_refused_naming_it() {
        let (_dir, config) = tree("", &[("50-charm.yaml", "max_concurent_uploads: 3\n")]);
        let err = Config::load(&config).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains("50-charm.yaml"), "{err}");

        let (_dir, config) = tree("", &[("50-charm.yaml", "\n\nmax_concurrent_uploads: 0\n")]);
        let err = Config::load(&config).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("50-charm.yaml") && text.contains("max_concurrent_uploads"),
            "{text}"
        );
        assert_eq!(
            crate::exit::of_config_error(&err),
            crate::exit::EXIT_BAD_CONFIG
        );
    }

    #[test]
    fn without_a_dropin_dir_the_file_is_read_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "max_concurrent_uploads: 3\n").unwrap();
        assert_eq!(Config::load(&config).unwrap().max_concurrent_uploads, 3);
        assert!(list(&config).unwrap().is_empty());
    }

    #[test]
    fn dropins_apply_without_the_main_file() {
        let (dir, config) = tree("", &[("50-charm.yaml", "max_concurrent_uploads: 6\n")]);
        std::fs::remove_file(&config).unwrap();
        let loaded = layered(None, &list(&dir.path().join("config.yaml")).unwrap()).unwrap();
        assert_eq!(loaded.max_concurrent_uploads, 6);
        assert_eq!(layered(None, &[]).unwrap(), Config::default());
    }
}
