//! Glance v2: the image calls the daemon needs, made through a [`Session`].
//!
//! Every list is a server-side query (name, owner, status, property filters, sort,
//! limit): the old Python module listed the whole project page by page and filtered
//! on the client, 1.8 s per "latest" against a 10 ms Glance round trip.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::session::{Session, Via};
use super::{error_message_from_body, redirect_error, OpenStackError, Service};

/// An image's status, as Glance reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ImageStatus {
    /// Created, no data yet.
    Queued,
    /// Data arriving (`PUT .../file`).
    Saving,
    /// Data staged by the import workflow.
    Uploading,
    /// Being imported from the staging area.
    Importing,
    /// Complete and usable.
    Active,
    /// Usable no more by an operator's decision.
    Deactivated,
    /// The upload failed.
    Killed,
    /// Deleted (seen only with `delayed_delete`).
    Deleted,
    /// Awaiting the scrubber.
    PendingDelete,
    /// A status this daemon does not know (a newer Glance).
    #[serde(other)]
    Other,
}

impl ImageStatus {
    /// As Glance writes it (`other` for one this daemon does not know).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Queued => "queued",
            ImageStatus::Saving => "saving",
            ImageStatus::Uploading => "uploading",
            ImageStatus::Importing => "importing",
            ImageStatus::Active => "active",
            ImageStatus::Deactivated => "deactivated",
            ImageStatus::Killed => "killed",
            ImageStatus::Deleted => "deleted",
            ImageStatus::PendingDelete => "pending_delete",
            ImageStatus::Other => "other",
        }
    }

    /// Data is still arriving, or never arrived: the statuses of an upload
    /// under way or abandoned. `deactivated` is an operator's decision and is
    /// left alone, as are images already being deleted.
    pub(crate) fn is_unfinished_upload(self) -> bool {
        matches!(
            self,
            ImageStatus::Queued
                | ImageStatus::Saving
                | ImageStatus::Uploading
                | ImageStatus::Importing
                | ImageStatus::Killed
        )
    }

    /// Glance is still storing or processing data it received: worth waiting for.
    pub(crate) fn is_processing(self) -> bool {
        matches!(
            self,
            ImageStatus::Saving | ImageStatus::Uploading | ImageStatus::Importing
        )
    }
}

impl std::fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) use crate::image_fields::{ContainerFormat, DiskFormat, Visibility};

/// An image as Glance describes it; only the fields the daemon reads are typed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct Image {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    pub(crate) status: ImageStatus,
    pub(crate) created_at: DateTime<Utc>,
    #[serde(default)]
    pub(crate) size: Option<u64>,
    #[serde(default)]
    pub(crate) checksum: Option<String>,
    #[serde(default)]
    pub(crate) os_hash_algo: Option<String>,
    #[serde(default)]
    pub(crate) os_hash_value: Option<String>,
    #[serde(default)]
    pub(crate) protected: bool,
    #[serde(default)]
    pub(crate) owner: Option<String>,
    /// Every other attribute, custom properties included.
    #[serde(flatten)]
    pub(crate) extra: serde_json::Map<String, serde_json::Value>,
}

impl Image {
    pub(crate) fn is_active(&self) -> bool {
        self.status == ImageStatus::Active
    }

    /// A custom property's value, if it is a string.
    pub(crate) fn property(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(|v| v.as_str())
    }
}

#[derive(Deserialize)]
struct ImageList {
    images: Vec<Image>,
    #[serde(default)]
    next: Option<String>,
}

/// What to create: Glance's core attributes plus custom properties (all strings).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NewImage {
    pub(crate) name: String,
    pub(crate) disk_format: DiskFormat,
    pub(crate) container_format: ContainerFormat,
    pub(crate) visibility: Visibility,
    /// Glance's tags: what a scheduler or an operator filters on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    #[serde(flatten)]
    pub(crate) properties: BTreeMap<String, String>,
}

/// Filters for [`Glance::list`]; each becomes a query parameter.
#[derive(Debug, Default, Clone)]
pub(crate) struct ImageQuery {
    pub(crate) name: Option<String>,
    pub(crate) status: Option<ImageStatus>,
    /// Custom property filters (`?key=value`).
    pub(crate) properties: Vec<(String, String)>,
    /// Stop after this many images (one page with `limit`).
    pub(crate) limit: Option<u32>,
    /// `os_hidden`: Glance lists only visible images when it is not given;
    /// `Some(true)` lists only hidden ones.
    pub(crate) hidden: Option<bool>,
}

/// Glance through a session: holds no state of its own.
pub(crate) struct Glance<'a> {
    session: &'a Session,
}

const PAGE_SIZE: u32 = 200;

impl Session {
    pub(crate) fn glance(&self) -> Glance<'_> {
        Glance { session: self }
    }
}

impl Glance<'_> {
    pub(super) fn cloud(&self) -> &str {
        self.session.name()
    }

    fn api_error(
        &self,
        operation: &str,
        status: reqwest::StatusCode,
        body: &str,
    ) -> OpenStackError {
        OpenStackError::Api {
            cloud: self.cloud().to_string(),
            service: Service::Glance,
            operation: operation.to_string(),
            status: status.as_u16(),
            message: error_message_from_body(body),
        }
    }

    pub(super) fn invalid(&self, operation: &str, detail: String) -> OpenStackError {
        OpenStackError::InvalidResponse {
            cloud: self.cloud().to_string(),
            service: Service::Glance,
            operation: operation.to_string(),
            detail,
        }
    }

    /// Sends through the session, reads the body, and turns a non-2xx status
    /// into [`OpenStackError::Api`].
    pub(super) async fn call<F>(
        &self,
        via: Via,
        operation: &str,
        build: F,
    ) -> Result<String, OpenStackError>
    where
        F: FnOnce(&reqwest::Client, &url::Url) -> reqwest::RequestBuilder,
    {
        let response = self
            .session
            .send_authenticated(Service::Glance, via, build)
            .await?;
        let status = response.status();
        if status.is_redirection() {
            return Err(redirect_error(
                self.cloud(),
                Service::Glance,
                operation,
                &response,
            ));
        }
        let url = response.url().to_string();
        let body = response
            .text()
            .await
            .map_err(|e| OpenStackError::connection(self.cloud(), Service::Glance, &url, &e))?;
        if !status.is_success() {
            return Err(self.api_error(operation, status, &body));
        }
        Ok(body)
    }

    /// Images matching `query` owned by the session's project, newest first
    /// (`created_at`, then id, both descending), following pagination.
    pub(crate) async fn list(&self, query: &ImageQuery) -> Result<Vec<Image>, OpenStackError> {
        // Only the project's own images: a public image of another project with the
        // same name must neither be "latest" nor a candidate for pruning. A session
        // has no token without a project (see `Session::renew`).
        let owner = self.session.authenticated().await?.owner.clone();
        let mut params: Vec<(String, String)> = vec![
            ("sort".into(), "created_at:desc,id:desc".into()),
            (
                "limit".into(),
                query.limit.unwrap_or(PAGE_SIZE).min(PAGE_SIZE).to_string(),
            ),
            ("owner".into(), owner),
        ];
        if let Some(name) = &query.name {
            params.push(("name".into(), name.clone()));
        }
        if let Some(status) = query.status {
            params.push(("status".into(), status.as_str().into()));
        }
        if let Some(hidden) = query.hidden {
            params.push(("os_hidden".into(), hidden.to_string()));
        }
        params.extend(query.properties.iter().cloned());

        let mut images = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let operation = "GET /v2/images";
            let body = match &next {
                None => {
                    self.call(Via::Api, operation, |c, base| {
                        c.get(join(base, "v2/images")).query(&params)
                    })
                    .await?
                }
                Some(path) => {
                    self.call(Via::Api, operation, |c, base| {
                        c.get(join(base, path.trim_start_matches('/')))
                    })
                    .await?
                }
            };
            let page: ImageList = serde_json::from_str(&body)
                .map_err(|e| self.invalid(operation, format!("image list: {e}")))?;
            images.extend(page.images);
            if let Some(limit) = query.limit {
                if images.len() >= limit as usize {
                    images.truncate(limit as usize);
                    break;
                }
            }
            match page.next {
                Some(n) if !n.is_empty() => next = Some(n),
                _ => break,
            }
        }
        Ok(images)
    }

    /// The newest active image of that name: one query, `limit=1`; never a
    /// hidden one (`os_hidden=false` said explicitly, not left to Glance's default).
    pub(crate) async fn latest_active(&self, name: &str) -> Result<Option<Image>, OpenStackError> {
        let query = ImageQuery {
            name: Some(name.to_string()),
            status: Some(ImageStatus::Active),
            limit: Some(1),
            hidden: Some(false),
            ..ImageQuery::default()
        };
        Ok(self.list(&query).await?.into_iter().next())
    }

    pub(crate) async fn create(&self, image: &NewImage) -> Result<Image, OpenStackError> {
        let operation = "POST /v2/images";
        let body = self
            .call(Via::Api, operation, |c, base| {
                c.post(join(base, "v2/images")).json(image)
            })
            .await?;
        serde_json::from_str(&body).map_err(|e| self.invalid(operation, format!("image: {e}")))
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Image, OpenStackError> {
        let operation = format!("GET /v2/images/{id}");
        let path = format!("v2/images/{id}");
        let body = self
            .call(Via::Api, &operation, |c, base| c.get(join(base, &path)))
            .await?;
        serde_json::from_str(&body).map_err(|e| self.invalid(&operation, format!("image: {e}")))
    }

    /// Deletes an image; one that is already gone counts as deleted.
    pub(crate) async fn delete(&self, id: &str) -> Result<(), OpenStackError> {
        let operation = format!("DELETE /v2/images/{id}");
        let path = format!("v2/images/{id}");
        match self
            .call(Via::Api, &operation, |c, base| c.delete(join(base, &path)))
            .await
        {
            Ok(_) => Ok(()),
            Err(OpenStackError::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v2/images/{id}/file` with a streamed body, on the upload client (no
    /// total timeout; the caller watches for stalls). Not sent again on a 401:
    /// the body is gone. The token was checked moments before by the image's creation.
    /// `store`: the multi-store Glance store to write to (`X-Image-Meta-Store`).
    pub(crate) async fn upload_data(
        &self,
        id: &str,
        size: u64,
        body: reqwest::Body,
        store: Option<&str>,
    ) -> Result<(), OpenStackError> {
        let operation = format!("PUT /v2/images/{id}/file");
        let path = format!("v2/images/{id}/file");
        self.call(Via::Upload, &operation, |c, base| {
            let request = c
                .put(join(base, &path))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, size)
                .header("x-openstack-image-size", size);
            match store {
                Some(store) => request.header("x-image-meta-store", store),
                None => request,
            }
            .body(body)
        })
        .await
        .map(drop)
    }
}

/// `base` joined with a relative path, keeping any path prefix of the endpoint
/// (`https://cloud/image` + `v2/images` → `https://cloud/image/v2/images`).
pub(super) fn join(base: &url::Url, path: &str) -> url::Url {
    let mut url = base.clone();
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let prefix = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}/{path}"));
    url.set_query(query);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_the_endpoint_prefix_and_next_links_query() {
        let base = url::Url::parse("https://cloud/image").unwrap();
        assert_eq!(
            join(&base, "v2/images").as_str(),
            "https://cloud/image/v2/images"
        );
        let base = url::Url::parse("http://g:9292/").unwrap();
        assert_eq!(
            join(&base, "v2/images?marker=abc&limit=2").as_str(),
            "http://g:9292/v2/images?marker=abc&limit=2"
        );
    }

    #[test]
    fn image_keeps_custom_properties() {
        let json = r#"{"id":"i","name":"n","status":"queued","created_at":"2026-01-01T00:00:00Z","protected":false,"image_helper_daemon_id":"d1","size":null}"#;
        let image: Image = serde_json::from_str(json).unwrap();
        assert_eq!(image.property("image_helper_daemon_id"), Some("d1"));
        assert_eq!(image.status, ImageStatus::Queued);
        assert!(!image.is_active());
    }

    #[test]
    fn a_status_glance_may_add_is_read_not_refused() {
        let json = r#"{"id":"i","status":"quarantined","created_at":"2026-01-01T00:00:00Z"}"#;
        let image: Image = serde_json::from_str(json).unwrap();
        assert_eq!(image.status, ImageStatus::Other);
        assert!(!image.status.is_unfinished_upload() && !image.is_active());
        let json = r#"{"id":"i","status":"pending_delete","created_at":"2026-01-01T00:00:00Z"}"#;
        let image: Image = serde_json::from_str(json).unwrap();
        assert_eq!(image.status, ImageStatus::PendingDelete);
    }

    #[test]
    fn closed_sets_parse_their_words_and_list_them_when_wrong() {
        assert_eq!("qcow2".parse::<DiskFormat>().unwrap(), DiskFormat::Qcow2);
        assert_eq!(ContainerFormat::Bare.to_string(), "bare");
        let err = "everyone".parse::<Visibility>().unwrap_err();
        assert_eq!(
            err,
            "'everyone' is not one of private, shared, community, public"
        );
        assert_eq!(
            serde_json::to_string(&Visibility::Community).unwrap(),
            r#""community""#
        );
    }
}
