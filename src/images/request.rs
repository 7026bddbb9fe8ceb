//! An upload request: the fields as they arrive, and their validation into an
//! [`UploadRequest`] (closed sets parsed, the daemon's own properties refused).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::names::{FieldError, ImageFamily};
use super::{MARKER_DAEMON, MARKER_UPLOAD};
pub(crate) use crate::api::UploadFields;
use crate::openstack::glance::{ContainerFormat, DiskFormat, Visibility};

/// Properties the daemon sets itself; a request may not.
const OWN_PROPERTIES: &[&str] = &[
    "architecture",
    "os_distro",
    "os_version",
    MARKER_DAEMON,
    MARKER_UPLOAD,
];
/// Glance's core attributes, which are not custom properties at all (API.md's
/// reserved list, plus `stores`); every `os_hash_*` is reserved too.
const CORE_ATTRIBUTES: &[&str] = &[
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "checksum",
    "owner",
    "size",
    "virtual_size",
    "min_disk",
    "min_ram",
    "created_at",
    "updated_at",
    "tags",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "disk_format",
    "container_format",
    "os_hidden",
    "stores",
];
const RESERVED_PREFIX: &str = "os_hash_";
/// Glance's bounds: a property key, a property value, a tag (in characters).
const MAX_KEY: usize = 255;
const MAX_VALUE: usize = 65535;
const MAX_TAG: usize = 255;
/// The request's own tags, beside the four every image gets.
const MAX_TAGS: usize = 20;

/// The clouds an upload goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Targets {
    /// `"cloud"` (or none: the default cloud): one cloud, the answer of one.
    One(Option<String>),
    /// `"clouds": [...]`: each named cloud, answered per cloud.
    Several(Vec<String>),
    /// `"clouds": ["*"]`: every configured cloud, answered per cloud.
    Every,
}

impl Targets {
    /// `cloud` and `clouds` as the request gives them.
    fn parse(cloud: Option<String>, clouds: Option<Vec<String>>) -> Result<Targets, FieldError> {
        let Some(clouds) = clouds else {
            if cloud.as_deref() == Some("") {
                return Err(FieldError::new("cloud", "must not be empty"));
            }
            return Ok(Targets::One(cloud));
        };
        if cloud.is_some() {
            return Err(FieldError::new(
                "clouds",
                "give either 'cloud' or 'clouds', not both",
            ));
        }
        if clouds == ["*"] {
            return Ok(Targets::Every);
        }
        if clouds.is_empty() {
            return Err(FieldError::new("clouds", "must name at least one cloud"));
        }
        let mut seen = std::collections::HashSet::new();
        for name in &clouds {
            if name.is_empty() {
                return Err(FieldError::new("clouds", "a cloud name must not be empty"));
            }
            if name == "*" {
                return Err(FieldError::new(
                    "clouds",
                    "'*' stands alone: [\"*\"] means every cloud",
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(FieldError::new(
                    "clouds",
                    format!("cloud '{name}' is listed twice"),
                ));
            }
        }
        Ok(Targets::Several(clouds))
    }
}

/// Where the image file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Src {
    /// `src_path`: judged against `upload_dirs`, then opened.
    Path(PathBuf),
    /// `src_fd`: the descriptor of this index among those sent with the request
    /// (unix socket only); the caller opened the file.
    Descriptor(u32),
}

impl Src {
    fn parse(path: Option<PathBuf>, fd: Option<u32>) -> Result<Src, FieldError> {
        match (path, fd) {
            (Some(path), None) => Ok(Src::Path(path)),
            (None, Some(index)) => Ok(Src::Descriptor(index)),
            (Some(_), Some(_)) => Err(FieldError::new(
                "src_fd",
                "give either 'src_path' or 'src_fd', not both",
            )),
            (None, None) => Err(FieldError::new(
                "src_path",
                "missing: give 'src_path' (or 'src_fd', a descriptor sent over the unix socket)",
            )),
        }
    }
}

/// A validated upload request.
#[derive(Debug, Clone)]
pub(crate) struct UploadRequest {
    pub(crate) family: ImageFamily,
    pub(crate) num_revisions: u32,
    pub(crate) src: Src,
    pub(crate) targets: Targets,
    /// Upload only where the newest image of the name holds other bytes.
    pub(crate) skip_unchanged: bool,
    /// `None`: detected from the file (qcow2 or raw).
    pub(crate) disk_format: Option<DiskFormat>,
    pub(crate) container_format: ContainerFormat,
    pub(crate) visibility: Visibility,
    pub(crate) properties: BTreeMap<String, String>,
    /// What happens to revisions past `num_revisions`.
    pub(crate) retire: super::prune::Retire,
    /// The request's tags (checked), added to the ones every image gets.
    pub(crate) tags: Vec<String>,
}

impl UploadRequest {
    /// Validates every field as the contract says.
    pub(crate) fn parse(fields: UploadFields) -> Result<Self, FieldError> {
        let family = ImageFamily::parse(&fields.base, &fields.app_name, &fields.arch)?;
        if fields.num_revisions < 1 {
            return Err(FieldError::new("num_revisions", "must be at least 1"));
        }
        let disk_format = parse_field("disk_format", fields.disk_format)?;
        let container_format = parse_field("container_format", fields.container_format)?
            .unwrap_or(ContainerFormat::Bare);
        let visibility =
            parse_field("visibility", fields.visibility)?.unwrap_or(Visibility::Private);
        for (key, value) in &fields.properties {
            check_property(key, value)?;
        }
        check_tags(&fields.tags)?;
        let targets = Targets::parse(fields.cloud, fields.clouds)?;
        let src = Src::parse(fields.src_path, fields.src_fd)?;
        Ok(UploadRequest {
            family,
            num_revisions: fields.num_revisions,
            src,
            targets,
            skip_unchanged: fields.skip_unchanged,
            disk_format,
            container_format,
            visibility,
            properties: fields.properties,
            retire: parse_field("retire", fields.retire)?.unwrap_or_default(),
            tags: fields.tags,
        })
    }

    /// The image's tags: `base:`, `arch:`, `app:`, `managed-by:`, then the
    /// request's, each once, in that order.
    pub(crate) fn image_tags(&self) -> Vec<String> {
        let family = &self.family;
        let mut tags = vec![
            format!("base:{}", family.base),
            format!("arch:{}", family.arch),
            format!("app:{}", family.app_name),
            "managed-by:openstack-image-helper".to_string(),
        ];
        for tag in &self.tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        tags
    }
}

/// A custom property a request may set: not the daemon's, not Glance's, within
/// Glance's lengths; the error names the key.
fn check_property(key: &str, value: &str) -> Result<(), FieldError> {
    let refuse = |why: String| Err(FieldError::new("properties", why));
    if OWN_PROPERTIES.contains(&key) {
        return refuse(format!("'{key}' is set by the daemon and may not be given"));
    }
    if CORE_ATTRIBUTES.contains(&key) || key.starts_with(RESERVED_PREFIX) {
        return refuse(format!(
            "'{key}' is a Glance image attribute, not a property"
        ));
    }
    let key_len = key.chars().count();
    if key_len == 0 || key_len > MAX_KEY {
        return refuse(format!(
            "key '{}' is {key_len} characters: keys are 1 to {MAX_KEY}",
            shortened(key)
        ));
    }
    let value_len = value.chars().count();
    if value_len > MAX_VALUE {
        return refuse(format!(
            "the value of '{key}' is {value_len} characters: at most {MAX_VALUE}"
        ));
    }
    Ok(())
}

/// At most [`MAX_TAGS`], each 1 to [`MAX_TAG`] characters.
fn check_tags(tags: &[String]) -> Result<(), FieldError> {
    if tags.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            format!("{} tags: at most {MAX_TAGS}", tags.len()),
        ));
    }
    for tag in tags {
        let len = tag.chars().count();
        if len == 0 || len > MAX_TAG {
            return Err(FieldError::new(
                "tags",
                format!(
                    "tag '{}' is {len} characters: tags are 1 to {MAX_TAG}",
                    shortened(tag)
                ),
            ));
        }
    }
    Ok(())
}

/// The first 40 characters of a text quoted back, so an answer stays short.
fn shortened(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// An optional word of a closed set, the field named when it is not one of them.
fn parse_field<T: std::str::FromStr<Err = String>>(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<T>, FieldError> {
    value
        .map(|text| {
            text.parse()
                .map_err(|reason| FieldError::new(field, reason))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> UploadFields {
        serde_json::from_value(serde_json::json!({
            "base": "jammy", "app_name": "runner", "arch": "x64",
            "num_revisions": 2, "src_path": "/x/y.img"
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_bare_and_private() {
        let r = UploadRequest::parse(fields()).unwrap();
        assert_eq!(r.container_format, ContainerFormat::Bare);
        assert_eq!(r.visibility, Visibility::Private);
        assert_eq!(r.disk_format, None);
        assert_eq!(r.retire, super::super::prune::Retire::Delete);
        let mut hide = fields();
        hide.retire = Some("hide".into());
        let r = UploadRequest::parse(hide).unwrap();
        assert_eq!(r.retire, super::super::prune::Retire::Hide);
        let mut bad = fields();
        bad.retire = Some("archive".into());
        let err = UploadRequest::parse(bad).unwrap_err();
        assert!(err.to_string().contains("retire"), "{err}");
    }

    #[test]
    fn the_daemons_own_properties_cannot_be_set() {
        for key in [
            "architecture",
            "os_distro",
            "os_version",
            MARKER_DAEMON,
            MARKER_UPLOAD,
            "name",
        ] {
            let mut f = fields();
            f.properties.insert(key.into(), "x".into());
            assert_eq!(
                UploadRequest::parse(f).unwrap_err().field,
                "properties",
                "{key}"
            );
        }
    }

    #[test]
    fn reserved_or_oversized_properties_are_refused_naming_the_key() {
        let long_key = "k".repeat(256);
        for (key, value, says) in [
            (
                "os_hash_algo",
                "x".to_string(),
                "'os_hash_algo' is a Glance image attribute",
            ),
            (
                "os_hash_anything",
                "x".to_string(),
                "'os_hash_anything' is a Glance",
            ),
            (
                "min_ram",
                "1".to_string(),
                "'min_ram' is a Glance image attribute",
            ),
            ("os_hidden", "true".to_string(), "'os_hidden' is a Glance"),
            (
                long_key.as_str(),
                "x".to_string(),
                "is 256 characters: keys are 1 to 255",
            ),
            ("", "x".to_string(), "is 0 characters"),
            (
                "hw_note",
                "v".repeat(65536),
                "the value of 'hw_note' is 65536 characters",
            ),
        ] {
            let mut f = fields();
            f.properties.insert(key.into(), value);
            let err = UploadRequest::parse(f).unwrap_err();
            assert_eq!(err.field, "properties", "{key}");
            assert!(err.to_string().contains(says), "{key}: {err}");
        }
        let mut f = fields();
        f.properties.insert("hw_note".into(), "é".repeat(65535));
        f.properties.insert("é".repeat(255), "x".into());
        assert!(UploadRequest::parse(f).is_ok());
    }

    #[test]
    fn tags_are_checked_and_added_to_the_daemons_own() {
        let mut f = fields();
        f.tags = vec!["team:ci".into(), "app:runner".into(), "team:ci".into()];
        assert_eq!(
            UploadRequest::parse(f).unwrap().image_tags(),
            [
                "base:jammy",
                "arch:x64",
                "app:runner",
                "managed-by:openstack-image-helper",
                "team:ci"
            ]
        );
        for (tags, says) in [
            (vec![String::new()], "is 0 characters"),
            (vec!["t".repeat(256)], "is 256 characters"),
            (
                (0..21).map(|i| format!("t{i}")).collect(),
                "21 tags: at most 20",
            ),
        ] {
            let mut f = fields();
            f.tags = tags;
            let err = UploadRequest::parse(f).unwrap_err();
            assert_eq!(err.field, "tags");
            assert!(err.to_string().contains(says), "{err}");
        }
        let mut f = fields();
        f.tags = (0..20).map(|i| "t".repeat(200 + i)).collect();
        assert!(UploadRequest::parse(f).is_ok());
    }

    #[test]
    fn zero_revisions_and_unknown_formats_are_refused() {
        let mut f = fields();
        f.num_revisions = 0;
        assert_eq!(UploadRequest::parse(f).unwrap_err().field, "num_revisions");
        let mut f = fields();
        f.disk_format = Some("qcow3".into());
        assert_eq!(UploadRequest::parse(f).unwrap_err().field, "disk_format");
        let mut f = fields();
        f.visibility = Some("everyone".into());
        assert_eq!(UploadRequest::parse(f).unwrap_err().field, "visibility");
    }

    #[test]
    fn the_file_is_a_path_or_a_descriptor_never_both_nor_neither() {
        let parse = |path: Option<&str>, fd: Option<u32>| {
            let mut f = fields();
            f.src_path = path.map(PathBuf::from);
            f.src_fd = fd;
            UploadRequest::parse(f).map(|r| r.src)
        };
        assert_eq!(
            parse(Some("/a"), None).unwrap(),
            Src::Path(PathBuf::from("/a"))
        );
        assert_eq!(parse(None, Some(0)).unwrap(), Src::Descriptor(0));
        let both = parse(Some("/a"), Some(0)).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let neither = parse(None, None).unwrap_err();
        assert_eq!(neither.field, "src_path");
    }

    #[test]
    fn clouds_name_one_or_several_or_every_cloud() {
        let parse = |cloud: Option<&str>, clouds: Option<&[&str]>| {
            let mut f = fields();
            f.cloud = cloud.map(String::from);
            f.clouds = clouds.map(|c| c.iter().map(|s| s.to_string()).collect());
            UploadRequest::parse(f).map(|r| r.targets)
        };
        assert_eq!(parse(None, None).unwrap(), Targets::One(None));
        assert_eq!(
            parse(Some("a"), None).unwrap(),
            Targets::One(Some("a".into()))
        );
        assert_eq!(parse(None, Some(&["*"])).unwrap(), Targets::Every);
        assert_eq!(
            parse(None, Some(&["a", "b"])).unwrap(),
            Targets::Several(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse(None, Some(&["a"])).unwrap(),
            Targets::Several(vec!["a".into()])
        );
        for (cloud, clouds, says) in [
            (Some("a"), Some(&["b"][..]), "not both"),
            (None, Some(&[][..]), "at least one"),
            (None, Some(&["a", "a"][..]), "'a' is listed twice"),
            (None, Some(&["a", "*"][..]), "stands alone"),
            (None, Some(&[""][..]), "must not be empty"),
            (Some(""), None, "must not be empty"),
        ] {
            let err = parse(cloud, clouds).unwrap_err();
            assert!(
                err.to_string().contains(says),
                "{cloud:?} {clouds:?}: {err}"
            );
        }
    }
}
