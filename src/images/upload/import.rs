//! How the data goes to each cloud: a direct `PUT .../file` (into one store
//! with `X-Image-Meta-Store`) or interoperable import (glance-direct: stage,
//! then import, into every store of `image_stores`), what `auto` learnt from a
//! 403, and the stores checked against the cloud's Glance once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::clouds::{CloudsError, UploadMethod};
use crate::images::{ImageError, ImageService};
use crate::openstack::registry::RegistryError;
use crate::openstack::session::Session;
use crate::openstack::OpenStackError;

/// What the image service learnt about each cloud's Glance.
#[derive(Debug, Default)]
pub(crate) struct GlanceWays {
    /// Clouds on `auto` that answered a direct upload 403 and offer
    /// glance-direct: they stay on import from then on.
    switched_to_import: Mutex<HashSet<String>>,
    /// (cloud, its `image_stores`) already checked against its Glance.
    stores_checked: Mutex<HashMap<String, Vec<String>>>,
}

/// How one try sends its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// `PUT .../file`.
    Direct,
    /// `PUT .../stage`, then `POST .../import` (glance-direct).
    Import,
}

impl Way {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Import => "import",
        }
    }
}

impl ImageService {
    /// How data goes to `session`'s cloud now: its `image_upload_method`,
    /// import for several stores, and for `auto` what a 403 taught.
    pub(crate) fn upload_way(&self, session: &Session) -> Way {
        let upload = &session.cloud().upload;
        if upload.needs_import() {
            return Way::Import;
        }
        match upload.method {
            UploadMethod::Direct => Way::Direct,
            UploadMethod::Import => Way::Import,
            UploadMethod::Auto => {
                let switched = self
                    .glance_ways
                    .switched_to_import
                    .lock()
                    .map(|s| s.contains(session.name()))
                    .unwrap_or(false);
                if switched {
                    Way::Import
                } else {
                    Way::Direct
                }
            }
        }
    }

    /// After a direct upload to an `auto` cloud failed with `err`: whether it
    /// was Glance's policy refusing direct upload (403) on a Glance that offers
    /// glance-direct. The cloud is then on import from now on. A 403 is never
    /// a transient fault: this is a switch of method, not a retry.
    pub(crate) async fn switch_to_import(&self, session: &Session, err: &ImageError) -> bool {
        let refused = matches!(
            err,
            ImageError::Upload(OpenStackError::Api { status: 403, operation, .. })
                if operation.ends_with("/file")
        );
        if !refused || session.cloud().upload.method != UploadMethod::Auto {
            return false;
        }
        match session.glance().offers_glance_direct().await {
            Ok(true) => {
                tracing::info!(cloud = %session.name(), "Glance refuses direct upload (403) and offers glance-direct: this cloud uploads by import from now on");
                if let Ok(mut s) = self.glance_ways.switched_to_import.lock() {
                    s.insert(session.name().to_string());
                }
                true
            }
            Ok(false) => false,
            Err(check) => {
                tracing::warn!(cloud = %session.name(), error = %check, "cannot tell whether Glance offers glance-direct");
                false
            }
        }
    }

    /// Checks `image_stores` against the cloud's `GET /v2/info/stores`, once
    /// per cloud and list: an unknown store, or stores on a single-store
    /// Glance, is an error naming the cloud and the store.
    pub(crate) async fn check_stores(&self, session: &Session) -> Result<(), ImageError> {
        let wanted = &session.cloud().upload.stores;
        if wanted.is_empty() {
            return Ok(());
        }
        let checked = self
            .glance_ways
            .stores_checked
            .lock()
            .map(|c| c.get(session.name()) == Some(wanted))
            .unwrap_or(false);
        if checked {
            return Ok(());
        }
        let offered = session
            .glance()
            .store_ids()
            .await
            .map_err(ImageError::Get)?;
        stores_error(session.name(), wanted, offered.as_deref())?;
        if let Ok(mut c) = self.glance_ways.stores_checked.lock() {
            c.insert(session.name().to_string(), wanted.clone());
        }
        Ok(())
    }
}

/// The error for `wanted` stores against what the cloud's Glance offers
/// (`None`: a single-store Glance), if any.
fn stores_error(
    cloud: &str,
    wanted: &[String],
    offered: Option<&[String]>,
) -> Result<(), ImageError> {
    let invalid = |reason: String| {
        ImageError::Cloud(RegistryError::InvalidClouds(CloudsError::Invalid {
            path: None,
            cloud: cloud.to_string(),
            key: "image_stores".to_string(),
            reason,
        }))
    };
    let Some(offered) = offered else {
        return Err(invalid(
            "this Glance has a single store (GET /v2/info/stores answered 404): remove image_stores"
                .to_string(),
        ));
    };
    match wanted.iter().find(|w| !offered.contains(w)) {
        Some(unknown) => Err(invalid(format!(
            "store '{unknown}' is not one of this Glance's stores ({})",
            offered.join(", ")
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_unknown_store_is_named_with_the_cloud_and_what_exists() {
        let offered = names(&["fast", "slow"]);
        assert!(stores_error("c", &names(&["slow"]), Some(&offered)).is_ok());
        assert!(stores_error("c", &offered, Some(&offered)).is_ok());
        let err = stores_error("edge", &names(&["fast", "nvme"]), Some(&offered)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cloud 'edge'") && text.contains("'nvme'"),
            "{text}"
        );
        assert!(
            text.contains("image_stores") && text.contains("fast, slow"),
            "{text}"
        );
        let err = stores_error("c", &names(&["fast"]), None).unwrap_err();
        assert!(err.to_string().contains("single store"), "{err}");
    }
}
