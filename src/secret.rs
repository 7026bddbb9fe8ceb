//! A wrapper for values that must never reach a log, a status answer or an error.

use std::fmt;

/// A password, application-credential secret, token or API key.
///
/// `Debug` and `Display` print `***`, so a secret inside a config struct, a log
/// field or an error message gives itself away as redacted instead of leaking.
/// The only way to the value is [`Secret::expose`], which is easy to grep for.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it (a request header or body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// The bearer token clients must present (`api_token_file`); a reload replaces it.
#[derive(Debug, Default)]
pub(crate) struct ApiToken(std::sync::RwLock<Secret>);

impl ApiToken {
    pub(crate) fn new(token: Secret) -> Self {
        ApiToken(std::sync::RwLock::new(token))
    }

    /// Whether `presented` is the token in force, compared in constant time.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let token = self.0.read().unwrap_or_else(|p| p.into_inner());
        bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
    }

    /// Puts `token` in force: the one before stops working at once.
    pub(crate) fn replace(&self, token: Secret) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = token;
    }
}

/// `bytes` bytes from the thread-local CSPRNG (seeded from the OS), as lowercase
/// hex: API tokens, daemon and upload ids.
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_replaced_api_token_ends_the_old_one() {
        let token = ApiToken::new(Secret::new("old"));
        assert!(token.matches("old"));
        assert!(!token.matches("ol") && !token.matches("older") && !token.matches(""));
        token.replace(Secret::new("new"));
        assert!(token.matches("new"));
        assert!(!token.matches("old"));
        assert!(!format!("{token:?}").contains("new"));
    }
}
