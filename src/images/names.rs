//! The request's words, parsed once at the edge: after this, an invalid base, arch
//! or application name cannot exist in the program.

use std::fmt;
use std::str::FromStr;

/// An invalid field of a request: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub(crate) struct FieldError {
    pub(crate) field: &'static str,
    pub(crate) reason: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        FieldError {
            field,
            reason: reason.into(),
        }
    }
}

/// An Ubuntu base the charms build images of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Base {
    Focal,
    Jammy,
    Noble,
    Resolute,
}

impl Base {
    const ALL: [Base; 4] = [Base::Focal, Base::Jammy, Base::Noble, Base::Resolute];

    /// The codename, used in image names.
    pub(crate) fn codename(self) -> &'static str {
        match self {
            Base::Focal => "focal",
            Base::Jammy => "jammy",
            Base::Noble => "noble",
            Base::Resolute => "resolute",
        }
    }

    /// The `os_version` property Glance and Nova use.
    pub(crate) fn version(self) -> &'static str {
        match self {
            Base::Focal => "20.04",
            Base::Jammy => "22.04",
            Base::Noble => "24.04",
            Base::Resolute => "26.04",
        }
    }
}

impl FromStr for Base {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Base::ALL
            .into_iter()
            .find(|b| b.codename() == s || b.version() == s)
            .ok_or_else(|| {
                FieldError::new(
                    "base",
                    format!("unknown base '{s}': expected focal, jammy, noble or resolute (or 20.04, 22.04, 24.04, 26.04)"),
                )
            })
    }
}

impl fmt::Display for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.codename())
    }
}

/// A machine architecture as Juju names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Arch {
    X64,
    Arm64,
    S390x,
    Ppc64le,
}

impl Arch {
    const ALL: [Arch; 4] = [Arch::X64, Arch::Arm64, Arch::S390x, Arch::Ppc64le];

    /// Juju's name, used in image names.
    pub(crate) fn juju_name(self) -> &'static str {
        match self {
            Arch::X64 => "x64",
            Arch::Arm64 => "arm64",
            Arch::S390x => "s390x",
            Arch::Ppc64le => "ppc64le",
        }
    }

    /// The `architecture` property Nova's scheduler matches against hosts.
    pub(crate) fn glance_architecture(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64",
            Arch::Arm64 => "aarch64",
            Arch::S390x => "s390x",
            Arch::Ppc64le => "ppc64le",
        }
    }
}

impl FromStr for Arch {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.juju_name() == s)
            .ok_or_else(|| {
                FieldError::new(
                    "arch",
                    format!("unknown arch '{s}': expected x64, arm64, s390x or ppc64le"),
                )
            })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.juju_name())
    }
}

/// A Juju application name: `^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$`, at most
/// 63 characters (every hyphen-separated part holds a letter).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AppName(String);

impl AppName {
    pub(crate) const MAX_LEN: usize = 63;

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AppName {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            Err(FieldError::new(
                "app_name",
                format!("'{s}' is not a Juju application name: {why}"),
            ))
        };
        if s.is_empty() {
            return bad("it is empty");
        }
        if s.len() > Self::MAX_LEN {
            return bad("it is longer than 63 characters");
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return bad("it must start with a lowercase letter");
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad("only lowercase letters, digits and hyphens are allowed");
        }
        if s.split('-')
            .any(|part| !part.chars().any(|c| c.is_ascii_lowercase()))
        {
            return bad("every hyphen-separated part must contain a letter");
        }
        Ok(AppName(s.to_string()))
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The image family a request is about: base, application and architecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ImageFamily {
    pub(crate) base: Base,
    pub(crate) app_name: AppName,
    pub(crate) arch: Arch,
}

impl ImageFamily {
    pub(crate) fn parse(base: &str, app_name: &str, arch: &str) -> Result<Self, FieldError> {
        Ok(ImageFamily {
            base: base.parse()?,
            app_name: app_name.parse()?,
            arch: arch.parse()?,
        })
    }

    /// The Glance image name by the configured template.
    pub(crate) fn image_name(&self, template: &NameTemplate) -> ImageName {
        ImageName(template.render(
            self.base.codename(),
            self.app_name.as_str(),
            self.arch.juju_name(),
        ))
    }
}

/// The Glance name of an image family's revisions: made only by the name
/// template from a parsed [`ImageFamily`], so it always holds base, app name
/// and arch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub(crate) struct ImageName(String);

impl ImageName {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `image_name_template` that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

/// One piece of a parsed [`NameTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as is.
    Literal(String),
    /// `{base}`.
    Base,
    /// `{app_name}`.
    AppName,
    /// `{arch}`.
    Arch,
}

/// How an image name is made, e.g. `{base}-{app_name}-{arch}`.
///
/// It must hold each of `{base}`, `{app_name}` and `{arch}`: without one of them
/// two different image kinds would share a name, and each upload would prune
/// the other's images as old revisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct NameTemplate {
    /// The template as written, for messages and display.
    text: String,
    /// The template split into literals and placeholders, so rendering never
    /// re-scans text that came from a value.
    parts: Vec<Part>,
}

impl NameTemplate {
    /// The image name for these values.
    pub(crate) fn render(&self, base: &str, app_name: &str, arch: &str) -> String {
        let mut name = String::new();
        for part in &self.parts {
            name.push_str(match part {
                Part::Literal(text) => text,
                Part::Base => base,
                Part::AppName => app_name,
                Part::Arch => arch,
            });
        }
        name
    }
}

impl Default for NameTemplate {
    fn default() -> Self {
        NameTemplate {
            text: "{base}-{app_name}-{arch}".to_string(),
            parts: vec![
                Part::Base,
                Part::Literal("-".to_string()),
                Part::AppName,
                Part::Literal("-".to_string()),
                Part::Arch,
            ],
        }
    }
}

impl FromStr for NameTemplate {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            match c {
                '{' => {
                    let Some(end) = rest.find('}') else {
                        return Err(TemplateError(format!(
                            "'{text}': '{{' without a closing '}}'"
                        )));
                    };
                    let placeholder = match &rest[1..end] {
                        "base" => Part::Base,
                        "app_name" => Part::AppName,
                        "arch" => Part::Arch,
                        other => {
                            return Err(TemplateError(format!(
                                "'{text}': unknown placeholder '{{{other}}}' \
                                 (allowed: {{base}}, {{app_name}}, {{arch}})"
                            )))
                        }
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder);
                    rest = &rest[end + 1..];
                }
                '}' => {
                    return Err(TemplateError(format!(
                        "'{text}': '}}' without an opening '{{'"
                    )))
                }
                _ => {
                    literal.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        for (part, name) in [
            (Part::Base, "{base}"),
            (Part::AppName, "{app_name}"),
            (Part::Arch, "{arch}"),
        ] {
            if !parts.contains(&part) {
                return Err(TemplateError(format!(
                    "'{text}' lacks {name}: without it different images would share \
                     a name and prune each other"
                )));
            }
        }
        Ok(NameTemplate {
            text: text.to_string(),
            parts,
        })
    }
}

impl TryFrom<String> for NameTemplate {
    type Error = TemplateError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for NameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_parse_by_codename_or_version() {
        assert_eq!("jammy".parse::<Base>().unwrap(), Base::Jammy);
        assert_eq!("24.04".parse::<Base>().unwrap(), Base::Noble);
        assert_eq!(Base::Resolute.version(), "26.04");
        assert!("bionic".parse::<Base>().is_err());
        assert!("Jammy".parse::<Base>().is_err());
    }

    #[test]
    fn arches_map_to_glance_architectures() {
        assert_eq!(
            "x64".parse::<Arch>().unwrap().glance_architecture(),
            "x86_64"
        );
        assert_eq!(
            "arm64".parse::<Arch>().unwrap().glance_architecture(),
            "aarch64"
        );
        assert_eq!(
            "s390x".parse::<Arch>().unwrap().glance_architecture(),
            "s390x"
        );
        assert_eq!(
            "ppc64le".parse::<Arch>().unwrap().glance_architecture(),
            "ppc64le"
        );
        let err = "amd64".parse::<Arch>().unwrap_err();
        assert_eq!(err.field, "arch");
    }

    #[test]
    fn app_names_follow_the_juju_rule() {
        for good in ["a", "github-runner", "runner2", "a-b2-c", "x1-y"] {
            assert!(good.parse::<AppName>().is_ok(), "{good}");
        }
        for bad in ["", "1a", "A", "a_b", "a-1", "a--b", "-a", "a-", "a.b", "ä"] {
            assert!(bad.parse::<AppName>().is_err(), "{bad}");
        }
        assert!("a".repeat(63).parse::<AppName>().is_ok());
        assert!("a".repeat(64).parse::<AppName>().is_err());
    }

    #[test]
    fn template_renders_each_placeholder() {
        let template: NameTemplate = "{base}-{app_name}-{arch}".parse().unwrap();
        assert_eq!(
            template.render("noble", "my-app", "x64"),
            "noble-my-app-x64"
        );
        let template: NameTemplate = "charm/{app_name}_{arch}@{base}{base}".parse().unwrap();
        assert_eq!(
            template.render("jammy", "a", "arm64"),
            "charm/a_arm64@jammyjammy"
        );
        assert_eq!(template.to_string(), "charm/{app_name}_{arch}@{base}{base}");
    }

    #[test]
    fn template_does_not_expand_placeholders_inside_values() {
        let template = NameTemplate::default();
        assert_eq!(template.render("{arch}", "a", "x64"), "{arch}-a-x64");
    }

    #[test]
    fn template_rejects_unknown_placeholders_stray_braces_and_missing_parts() {
        for bad in [
            "{base}-{app_name}-{arch}-{unit}",
            "{base}-{app_name}-{arch}}",
            "{base}-{app_name}-{arch",
            "{base}-{app_name}",
            "{app_name}-{arch}",
            "{base}-{arch}",
            "",
        ] {
            assert!(bad.parse::<NameTemplate>().is_err(), "{bad:?}");
        }
    }
}
