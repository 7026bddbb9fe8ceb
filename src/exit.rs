//! The process's exit codes (the contract's), in one place that both the client
//! subcommands ([`cli`](crate::cli)) and `serve` ([`daemon`](crate::daemon)) read.

/// Done: the answer is on stdout, or the daemon stopped cleanly.
pub(crate) const EXIT_OK: i32 = 0;
/// A client: the daemon answered with an error (its code and message on
/// stderr). `serve`: it failed while starting or running (systemd restarts it).
pub(crate) const EXIT_DAEMON_ERROR: i32 = 1;
/// A client: a usage error (a missing flag).
pub(crate) const EXIT_USAGE: i32 = 2;
/// `serve`: the config is refused (a value out of its range, an unknown key, a
/// `listen` beyond loopback that was not asked for). The same code as a usage
/// error: the unit's `RestartPreventExitStatus=2` keeps a bad config from
/// restarting in a loop, since no restart can mend it.
pub(crate) const EXIT_BAD_CONFIG: i32 = 2;
/// A client: the daemon cannot be reached (or its config or token read).
pub(crate) const EXIT_UNREACHABLE: i32 = 3;

/// `serve`'s exit code for a config it cannot use: one it could not read may
/// be there at the next try (a restart is worth it); any other is refused
/// until an operator mends it.
pub(crate) fn of_config_error(err: &crate::config::ConfigError) -> i32 {
    match err {
        crate::config::ConfigError::Read { .. } => EXIT_DAEMON_ERROR,
        _ => EXIT_BAD_CONFIG,
    }
}
