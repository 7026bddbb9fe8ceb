//! The client side of the API: finds the daemon (address and API token) from the
//! config, sends a request, and reads the answer into the API's wire types.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::api::ErrorBody;
use crate::config::{Config, Listen};
use crate::exit::{EXIT_DAEMON_ERROR, EXIT_UNREACHABLE};
use crate::runtime::client_api_token;
use crate::secret::Secret;

/// A client of the daemon's API.
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
    /// The daemon's unix socket, when it listens on one (a descriptor can
    /// then be passed: [`ApiClient::post_with_fd`]).
    unix: Option<std::path::PathBuf>,
}

/// A failed client call, already sorted by exit code.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The daemon answered with an error (exit 1).
    Daemon {
        status: u16,
        code: String,
        message: String,
    },
    /// The daemon could not be reached, or its token read (exit 3).
    Unreachable(String),
}

impl ClientError {
    /// Prints the error on stderr and returns the exit code.
    pub(crate) fn report(&self) -> i32 {
        match self {
            ClientError::Daemon {
                status,
                code,
                message,
            } => {
                eprintln!("error: {code}: {message} (HTTP {status})");
                EXIT_DAEMON_ERROR
            }
            ClientError::Unreachable(message) => {
                eprintln!("error: daemon unreachable: {message}");
                EXIT_UNREACHABLE
            }
        }
    }
}

impl ApiClient {
    pub(crate) fn from_config(config: &Config) -> Result<ApiClient, ClientError> {
        let token =
            client_api_token(config).map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy();
        let (builder, base) = match &config.listen {
            Listen::Tcp(addr) => {
                // A wildcard listen address is reached on loopback.
                let mut addr = *addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr {
                        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                (builder, format!("http://{addr}"))
            }
            Listen::Unix(path) => (
                builder.unix_socket(path.clone()),
                "http://localhost".to_string(),
            ),
        };
        let http = builder
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let unix = match &config.listen {
            Listen::Unix(path) => Some(path.clone()),
            Listen::Tcp(_) => None,
        };
        Ok(ApiClient {
            http,
            base,
            token,
            unix,
        })
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(self.token.expose())
    }

    /// Sends `request`; a success is read as `T`, an error as the API's error body.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request.send().await.map_err(|e| {
            ClientError::Unreachable(format!(
                "{}: {}",
                self.base,
                crate::openstack::error_chain(&e)
            ))
        })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        read_answer(status, text)
    }

    /// Whether the daemon listens on a unix socket (descriptors can be passed).
    pub(crate) fn is_unix(&self) -> bool {
        self.unix.is_some()
    }

    /// `POST path_and_query` with a JSON `body` and `file`'s descriptor passed
    /// with it (the body's `src_fd: 0`); unix socket only.
    pub(crate) async fn post_with_fd<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        file: &std::fs::File,
    ) -> Result<T, ClientError> {
        let Some(socket) = &self.unix else {
            return Err(ClientError::Unreachable(
                "a descriptor can only be passed over the daemon's unix socket".to_string(),
            ));
        };
        let mut headers = headers;
        headers.push(("authorization", format!("Bearer {}", self.token.expose())));
        let request = super::fd_client::FdRequest {
            socket,
            path_and_query,
            headers,
            body,
            file,
        };
        let (status, text) = super::fd_client::post(request, Duration::from_secs(120))
            .await
            .map_err(|e| ClientError::Unreachable(format!("unix:{}: {e}", socket.display())))?;
        read_answer(status, text)
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, path)
                .query(query)
                .timeout(Duration::from_secs(120)),
        )
        .await
    }
}

/// An answer's status and text: a success read as `T`, an error as the API's
/// error body.
fn read_answer<T: DeserializeOwned>(status: u16, text: String) -> Result<T, ClientError> {
    if (200..300).contains(&status) {
        return serde_json::from_str(&text).map_err(|e| ClientError::Daemon {
            status,
            code: "invalid_answer".to_string(),
            message: format!("the daemon's answer is not what this CLI expects: {e}: {text}"),
        });
    }
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Daemon {
            status,
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ClientError::Daemon {
            status,
            code: "http_error".to_string(),
            message: text,
        },
    })
}
