//! Where clouds.yaml and secure.yaml are: a path given (read alone), or
//! openstacksdk's search path (secure.yaml merged over it).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::settings::from_documents;
use super::{CloudsError, CloudsFile};

/// The system-wide directory at the end of openstacksdk's search path.
pub(crate) const SYSTEM_CONFIG_DIR: &str = "/etc/openstack";

/// The suffixes openstacksdk tries for `clouds.*` and `secure.*`, in order.
const SUFFIXES: &[&str] = &["yaml", "yml", "json"];

impl CloudsFile {
    /// Loads clouds.yaml.
    ///
    /// With `path`, that file alone: a `secure.yaml` beside it is not read
    /// (openstacksdk merges one only on its search path, and a file the daemon
    /// was pointed at, or that `PUT /v1/clouds` wrote, holds every credential
    /// it needs; merging would bring back secrets, or clouds, the PUT dropped).
    /// With `None`, openstacksdk's search path, secure.yaml included, using the
    /// process's environment, `$HOME` and current directory (see [`search`]).
    pub fn load(path: Option<&Path>) -> Result<CloudsFile, CloudsError> {
        match path {
            Some(path) => {
                let text = read_file("clouds.yaml", path)?;
                from_documents((&text, Some(path)), None)
            }
            None => {
                let env = |name: &str| std::env::var(name).ok();
                let home = std::env::var_os("HOME").map(PathBuf::from);
                // Without a current directory, "./clouds.yaml" cannot exist.
                let cwd = std::env::current_dir().ok();
                search(
                    &env,
                    home.as_deref(),
                    cwd.as_deref(),
                    &[PathBuf::from(SYSTEM_CONFIG_DIR)],
                )
            }
        }
    }
}

/// openstacksdk's search behind [`CloudsFile::load`], with the environment,
/// home, current directory and system directories passed in (so tests can
/// drive it without depending on /etc).
///
/// clouds.yaml: `$OS_CLIENT_CONFIG_FILE`, then `clouds.{yaml,yml,json}` in
/// `cwd`, `$XDG_CONFIG_HOME/openstack`, `~/.config/openstack` and
/// `/etc/openstack`; the first that exists wins. secure.yaml is searched
/// the same way on its own (`$OS_CLIENT_SECURE_FILE` first), as openstacksdk
/// does, and merged over it. A file that exists but cannot be read for lack
/// of permission is skipped, as openstacksdk does.
fn search(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
    cwd: Option<&Path>,
    system_dirs: &[PathBuf],
) -> Result<CloudsFile, CloudsError> {
    let dirs = search_dirs(env, home, cwd, system_dirs);
    let clouds_candidates = candidates(env("OS_CLIENT_CONFIG_FILE"), &dirs, "clouds");
    let Some((clouds_path, clouds_text)) = first_readable("clouds.yaml", &clouds_candidates)?
    else {
        return Err(CloudsError::NotFound {
            searched: clouds_candidates,
        });
    };
    let secure_candidates = candidates(env("OS_CLIENT_SECURE_FILE"), &dirs, "secure");
    let secure = first_readable("secure.yaml", &secure_candidates)?;
    from_documents(
        (&clouds_text, Some(&clouds_path)),
        secure
            .as_ref()
            .map(|(p, t)| (t.as_str(), Some(p.as_path()))),
    )
}

/// openstacksdk's directories, in order, without duplicates.
fn search_dirs(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
    cwd: Option<&Path>,
    system_dirs: &[PathBuf],
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(cwd.map(Path::to_path_buf));
    // platformdirs' user config dir: $XDG_CONFIG_HOME when set (and absolute).
    dirs.extend(
        env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|p| p.join("openstack")),
    );
    dirs.extend(home.map(|home| home.join(".config").join("openstack")));
    dirs.extend(system_dirs.iter().cloned());
    let mut unique: Vec<PathBuf> = Vec::with_capacity(dirs.len());
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

/// `override_file` (when set and not empty), then `STEM.{yaml,yml,json}` in each dir.
fn candidates(override_file: Option<String>, dirs: &[PathBuf], stem: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = override_file
        .filter(|file| !file.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for dir in dirs {
        for suffix in SUFFIXES {
            files.push(dir.join(format!("{stem}.{suffix}")));
        }
    }
    files
}

/// The first of `files` that exists and can be read, with its text.
///
/// Missing files are skipped; so are unreadable ones (openstacksdk does the
/// same), with a warning since that is rarely what the operator meant.
fn first_readable(
    what: &'static str,
    files: &[PathBuf],
) -> Result<Option<(PathBuf, String)>, CloudsError> {
    for file in files {
        match fs::read_to_string(file) {
            Ok(text) => return Ok(Some((file.clone(), text))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                tracing::warn!(path = %file.display(), "skipping {what} that cannot be read: {err}");
                continue;
            }
            Err(cause) => {
                return Err(CloudsError::Read {
                    what,
                    path: file.clone(),
                    cause,
                })
            }
        }
    }
    Ok(None)
}

/// Reads a file named explicitly (no skipping: the operator asked for it).
fn read_file(what: &'static str, path: &Path) -> Result<String, CloudsError> {
    fs::read_to_string(path).map_err(|cause| CloudsError::Read {
        what,
        path: path.to_path_buf(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clouds::Auth;
    use std::collections::HashMap;

    #[test]
    fn load_with_a_path_reads_that_file_alone_never_a_secure_yaml_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        fs::write(
            &path,
            "clouds:\n  c:\n    auth: {auth_url: 'https://k/v3', user_id: u, password: mine}\n",
        )
        .unwrap();
        for secure in ["secure.yaml", "secure.yml"] {
            fs::write(
                dir.path().join(secure),
                "clouds:\n  c:\n    auth: {password: old}\n  dropped:\n    auth: {password: x}\n",
            )
            .unwrap();
        }
        let file = CloudsFile::load(Some(&path)).unwrap();
        assert_eq!(file.path.as_deref(), Some(path.as_path()));
        assert_eq!(file.names(), ["c"], "no cloud comes from secure.yaml");
        let Auth::Password { password, .. } = &file.clouds[0].auth else {
            panic!("not password");
        };
        assert_eq!(password.expose(), "mine");

        // A cloud without its password stays without it: secure.yaml does not mend it.
        fs::write(
            &path,
            "clouds:\n  c:\n    auth: {auth_url: 'https://k/v3', user_id: u}\n",
        )
        .unwrap();
        let err = CloudsFile::load(Some(&path)).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        let err = CloudsFile::load(Some(&dir.path().join("absent.yaml"))).unwrap_err();
        assert!(matches!(err, CloudsError::Read { .. }));
    }

    /// A clouds.yaml whose only cloud is named `name`.
    fn write_clouds(path: &Path, name: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            path,
            format!("clouds:\n  {name}:\n    auth: {{auth_url: 'https://k/v3', user_id: u, password: p}}\n"),
        )
        .unwrap();
    }

    fn search_in(
        vars: &HashMap<&str, String>,
        home: &Path,
        cwd: &Path,
    ) -> Result<CloudsFile, CloudsError> {
        let env = |name: &str| vars.get(name).cloned();
        search(&env, Some(home), Some(cwd), &[])
    }

    #[test]
    fn search_path_order_is_env_then_cwd_then_home() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let cwd = root.path().join("cwd");
        fs::create_dir_all(&cwd).unwrap();
        let explicit = root.path().join("elsewhere/my-clouds.yaml");
        let mut vars = HashMap::new();

        let err = search_in(&vars, &home, &cwd).unwrap_err();
        assert!(matches!(&err, CloudsError::NotFound { searched } if searched.len() == 6));

        write_clouds(&home.join(".config/openstack/clouds.yaml"), "home");
        assert_eq!(search_in(&vars, &home, &cwd).unwrap().names(), ["home"]);

        write_clouds(&cwd.join("clouds.yml"), "cwd");
        let found = search_in(&vars, &home, &cwd).unwrap();
        assert_eq!(found.names(), ["cwd"]);
        assert_eq!(found.path, Some(cwd.join("clouds.yml")));

        // A set but missing OS_CLIENT_CONFIG_FILE falls through, as in openstacksdk.
        vars.insert("OS_CLIENT_CONFIG_FILE", explicit.display().to_string());
        assert_eq!(search_in(&vars, &home, &cwd).unwrap().names(), ["cwd"]);

        write_clouds(&explicit, "explicit");
        assert_eq!(search_in(&vars, &home, &cwd).unwrap().names(), ["explicit"]);
    }

    #[test]
    fn search_path_honours_xdg_config_home_before_dot_config() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let cwd = root.path().join("cwd");
        fs::create_dir_all(&cwd).unwrap();
        let xdg = root.path().join("xdg");
        write_clouds(&home.join(".config/openstack/clouds.yaml"), "home");
        write_clouds(&xdg.join("openstack/clouds.yaml"), "xdg");
        let vars = HashMap::from([("XDG_CONFIG_HOME", xdg.display().to_string())]);
        assert_eq!(search_in(&vars, &home, &cwd).unwrap().names(), ["xdg"]);
    }

    #[test]
    fn search_path_merges_secure_yaml_from_its_own_search() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let cwd = root.path().join("cwd");
        fs::create_dir_all(&cwd).unwrap();
        fs::create_dir_all(home.join(".config/openstack")).unwrap();
        fs::write(
            home.join(".config/openstack/clouds.yaml"),
            "clouds:\n  c:\n    auth: {auth_url: 'https://k/v3', user_id: u}\n",
        )
        .unwrap();
        let secure_file = root.path().join("s.yaml");
        fs::write(
            &secure_file,
            "clouds:\n  c:\n    auth: {password: from-env-file}\n",
        )
        .unwrap();
        fs::write(
            home.join(".config/openstack/secure.yaml"),
            "clouds:\n  c:\n    auth: {password: from-home}\n",
        )
        .unwrap();

        let mut vars = HashMap::new();
        let password = |file: CloudsFile| match &file.clouds[0].auth {
            Auth::Password { password, .. } => password.expose().to_string(),
            other => panic!("not password: {other:?}"),
        };
        assert_eq!(
            password(search_in(&vars, &home, &cwd).unwrap()),
            "from-home"
        );
        vars.insert("OS_CLIENT_SECURE_FILE", secure_file.display().to_string());
        assert_eq!(
            password(search_in(&vars, &home, &cwd).unwrap()),
            "from-env-file"
        );
    }
}
