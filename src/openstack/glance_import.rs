//! Glance v2 beyond the plain upload: interoperable import (glance-direct: stage,
//! then import), what a Glance offers (`/v2/info/import`, `/v2/info/stores`),
//! and hiding an image (`os_hidden`).

use serde::Deserialize;
use serde_json::json;

use super::glance::{join, Glance};
use super::session::Via;
use super::OpenStackError;

/// The import method of this daemon: the data is staged by the daemon itself.
const GLANCE_DIRECT: &str = "glance-direct";

#[derive(Deserialize)]
struct ImportInfo {
    #[serde(rename = "import-methods")]
    methods: ImportMethods,
}

#[derive(Deserialize)]
struct ImportMethods {
    #[serde(default)]
    value: Vec<String>,
}

#[derive(Deserialize)]
struct StoresInfo {
    stores: Vec<StoreInfo>,
}

#[derive(Deserialize)]
struct StoreInfo {
    id: String,
}

impl Glance<'_> {
    /// `PUT /v2/images/{id}/stage` with a streamed body: the data of an import,
    /// sent as the direct upload's is (no total timeout, not sent again).
    pub(crate) async fn stage_data(
        &self,
        id: &str,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), OpenStackError> {
        let operation = format!("PUT /v2/images/{id}/stage");
        let path = format!("v2/images/{id}/stage");
        self.call(Via::Upload, &operation, |c, base| {
            c.put(join(base, &path))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, size)
                .header("x-openstack-image-size", size)
                .body(body)
        })
        .await
        .map(drop)
    }

    /// `POST /v2/images/{id}/import` of the staged data by glance-direct; with
    /// `stores`, into each of them, all of which must succeed. Glance answers
    /// 202 and imports in the background.
    pub(crate) async fn import_staged(
        &self,
        id: &str,
        stores: &[String],
    ) -> Result<(), OpenStackError> {
        let operation = format!("POST /v2/images/{id}/import");
        let path = format!("v2/images/{id}/import");
        let body = import_body(stores);
        self.call(Via::Api, &operation, |c, base| {
            c.post(join(base, &path)).json(&body)
        })
        .await
        .map(drop)
    }

    /// Whether this Glance offers glance-direct (`GET /v2/info/import`); a
    /// Glance without the import API (404) does not.
    pub(crate) async fn offers_glance_direct(&self) -> Result<bool, OpenStackError> {
        let operation = "GET /v2/info/import";
        let body = match self
            .call(Via::Api, operation, |c, base| {
                c.get(join(base, "v2/info/import"))
            })
            .await
        {
            Ok(body) => body,
            Err(OpenStackError::Api { status: 404, .. }) => return Ok(false),
            Err(err) => return Err(err),
        };
        let info: ImportInfo = serde_json::from_str(&body)
            .map_err(|e| self.invalid(operation, format!("import info: {e}")))?;
        Ok(info.methods.value.iter().any(|m| m == GLANCE_DIRECT))
    }

    /// The stores of a multi-store Glance (`GET /v2/info/stores`); `None` for a
    /// Glance with a single store, which answers 404 ("Multi backend is not
    /// supported at this site").
    pub(crate) async fn store_ids(&self) -> Result<Option<Vec<String>>, OpenStackError> {
        let operation = "GET /v2/info/stores";
        let body = match self
            .call(Via::Api, operation, |c, base| {
                c.get(join(base, "v2/info/stores"))
            })
            .await
        {
            Ok(body) => body,
            Err(OpenStackError::Api { status: 404, .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let info: StoresInfo = serde_json::from_str(&body)
            .map_err(|e| self.invalid(operation, format!("stores info: {e}")))?;
        Ok(Some(info.stores.into_iter().map(|s| s.id).collect()))
    }

    /// Hides an image (`os_hidden: true`): it stays bootable by id, and no
    /// listing shows it unless asked for hidden images.
    pub(crate) async fn hide(&self, id: &str) -> Result<(), OpenStackError> {
        let operation = format!("PATCH /v2/images/{id}");
        let path = format!("v2/images/{id}");
        let patch = json!([{"op": "replace", "path": "/os_hidden", "value": true}]);
        self.call(Via::Api, &operation, |c, base| {
            c.patch(join(base, &path))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/openstack-images-v2.1-json-patch",
                )
                .body(patch.to_string())
        })
        .await
        .map(drop)
    }
}

/// The body of an import by glance-direct, into `stores` when any are given.
fn import_body(stores: &[String]) -> serde_json::Value {
    let mut body = json!({"method": {"name": GLANCE_DIRECT}});
    if !stores.is_empty() {
        body["stores"] = json!(stores);
        body["all_stores_must_succeed"] = json!(true);
    }
    body
}

/// The stores an image is in, from its `stores` attribute (`"fast,slow"`);
/// `None` when Glance has none (a single-store Glance).
pub(crate) fn image_stores(image: &super::glance::Image) -> Option<Vec<String>> {
    let stores: Vec<String> = image
        .property("stores")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (!stores.is_empty()).then_some(stores)
}

/// What Glance says about a failed import (`os_glance_failed_import`: the
/// stores it failed in), `None` while nothing failed.
pub(crate) fn failed_import(image: &super::glance::Image) -> Option<&str> {
    image
        .property("os_glance_failed_import")
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openstack::glance::Image;

    fn image(extra: &str) -> Image {
        serde_json::from_str(&format!(
            r#"{{"id":"i","status":"importing","created_at":"2026-01-01T00:00:00Z"{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_import_body_names_the_stores_only_when_given() {
        assert_eq!(
            import_body(&[]),
            json!({"method": {"name": "glance-direct"}})
        );
        assert_eq!(
            import_body(&["fast".into(), "slow".into()]),
            json!({"method": {"name": "glance-direct"}, "stores": ["fast", "slow"],
                   "all_stores_must_succeed": true})
        );
    }

    #[test]
    fn stores_and_failed_imports_are_read_from_the_image() {
        assert_eq!(image("").property("stores"), None);
        assert_eq!(image_stores(&image("")), None);
        assert_eq!(
            image_stores(&image(r#","stores":"fast,slow""#)),
            Some(vec!["fast".to_string(), "slow".to_string()])
        );
        assert_eq!(image_stores(&image(r#","stores":"""#)), None);
        assert_eq!(failed_import(&image("")), None);
        assert_eq!(
            failed_import(&image(r#","os_glance_failed_import":"""#)),
            None
        );
        assert_eq!(
            failed_import(&image(r#","os_glance_failed_import":"fast""#)),
            Some("fast")
        );
    }

    #[test]
    fn import_info_lists_the_methods() {
        let info: ImportInfo = serde_json::from_str(
            r#"{"import-methods": {"description": "x", "type": "array", "value": ["glance-direct", "web-download"]}}"#,
        )
        .unwrap();
        assert!(info.methods.value.iter().any(|m| m == GLANCE_DIRECT));
        let stores: StoresInfo = serde_json::from_str(
            r#"{"stores": [{"id": "fast", "default": true}, {"id": "slow"}]}"#,
        )
        .unwrap();
        assert_eq!(stores.stores.len(), 2);
    }
}
