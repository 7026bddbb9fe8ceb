//! The daemon's own per-cloud keys for how images reach Glance (openstacksdk
//! ignores them): `image_upload_method` and `image_stores`.

use serde_yaml::{Mapping, Value};

use super::settings::CloudContext;
use super::CloudsError;

closed_set! {
    /// `image_upload_method`: how the image data reaches Glance.
    #[derive(Default)]
    pub(crate) enum UploadMethod {
        /// Direct first; a 403 to `PUT .../file` from a Glance that offers
        /// glance-direct switches the cloud to import for good.
        #[default]
        Auto = "auto",
        /// `PUT /v2/images/{id}/file`.
        Direct = "direct",
        /// Interoperable import, glance-direct: stage, then import.
        Import = "import",
    }
}

/// How images go to one cloud, as its clouds.yaml entry says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadSettings {
    /// `image_upload_method` (default `auto`).
    pub(crate) method: UploadMethod,
    /// `image_stores`: the multi-store Glance stores every image must land in;
    /// empty: Glance's default store.
    pub(crate) stores: Vec<String>,
}

impl UploadSettings {
    /// Whether the data must go by import whatever was learnt: `import`, or
    /// several stores (one direct `PUT` reaches one store only).
    pub(crate) fn needs_import(&self) -> bool {
        self.method == UploadMethod::Import || self.stores.len() > 1
    }
}

impl CloudContext<'_> {
    /// `image_upload_method` and `image_stores` of one cloud.
    pub(super) fn upload_settings(&self, map: &Mapping) -> Result<UploadSettings, CloudsError> {
        const METHOD: &str = "image_upload_method";
        const STORES: &str = "image_stores";
        let method = match self.string(map, METHOD, METHOD)? {
            None => UploadMethod::Auto,
            Some(text) => text
                .trim()
                .parse::<UploadMethod>()
                .map_err(|reason| self.invalid(METHOD, reason))?,
        };
        let stores = match map.get(STORES) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => {
                let mut stores = Vec::with_capacity(items.len());
                for item in items {
                    let name = item
                        .as_str()
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| self.invalid(STORES, "each store must be a name"))?;
                    if stores.iter().any(|s| s == name) {
                        return Err(self.invalid(STORES, format!("store '{name}' is listed twice")));
                    }
                    stores.push(name.to_string());
                }
                stores
            }
            Some(_) => return Err(self.invalid(STORES, "must be a list of store names")),
        };
        if method == UploadMethod::Direct && stores.len() > 1 {
            return Err(self.invalid(
                STORES,
                "several stores need image_upload_method 'import' or 'auto' (a direct upload reaches one store)",
            ));
        }
        Ok(UploadSettings { method, stores })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clouds::tests::{only_cloud, parse};

    fn cloud(extra: &str) -> Result<UploadSettings, CloudsError> {
        let text = format!(
            "clouds:\n  c:\n{extra}    auth: {{auth_url: 'https://k/v3', user_id: u, password: p}}\n"
        );
        parse(&text).map(|f| f.clouds[0].upload.clone())
    }

    #[test]
    fn defaults_are_auto_and_no_stores() {
        let c = only_cloud(
            "clouds:\n  c:\n    auth: {auth_url: 'https://k/v3', user_id: u, password: p}\n",
        );
        assert_eq!(c.upload, UploadSettings::default());
        assert_eq!(c.upload.method, UploadMethod::Auto);
        assert!(!c.upload.needs_import());
    }

    #[test]
    fn each_method_is_read_and_others_refused_naming_the_key() {
        for (word, method) in [
            ("auto", UploadMethod::Auto),
            ("direct", UploadMethod::Direct),
            ("import", UploadMethod::Import),
        ] {
            let s = cloud(&format!("    image_upload_method: {word}\n")).unwrap();
            assert_eq!(s.method, method);
        }
        assert!(cloud("    image_upload_method: import\n")
            .unwrap()
            .needs_import());
        let err = cloud("    image_upload_method: web-download\n").unwrap_err();
        assert!(
            matches!(&err, CloudsError::Invalid { key, .. } if key == "image_upload_method"),
            "{err}"
        );
        assert!(err.to_string().contains("auto, direct, import"), "{err}");
    }

    #[test]
    fn stores_are_a_list_of_distinct_names() {
        let s = cloud("    image_stores: [fast, slow]\n").unwrap();
        assert_eq!(s.stores, vec!["fast", "slow"]);
        assert!(s.needs_import(), "two stores go by import");
        let one = cloud("    image_stores: [slow]\n").unwrap();
        assert!(!one.needs_import(), "one store goes by a direct PUT");
        for bad in [
            "    image_stores: slow\n",
            "    image_stores: [fast, fast]\n",
            "    image_stores: ['']\n",
            "    image_stores: [[a]]\n",
            "    image_upload_method: direct\n    image_stores: [fast, slow]\n",
        ] {
            let err = cloud(bad).unwrap_err();
            assert!(
                matches!(&err, CloudsError::Invalid { key, cloud, .. } if key == "image_stores" && cloud == "c"),
                "{bad}: {err}"
            );
        }
    }
}
