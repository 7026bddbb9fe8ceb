//! How the config's values are read: the deserializers that check a value as
//! serde reads it (so the error keeps its key and line), and the list of keys
//! serde knows, for the unknown-key message.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The longest duration any key takes, 100 years as humantime counts them
/// (`100y`, 365.25 days each): longer ones are typos (`1e19s`), and would
/// overflow the clock when added to "now" (a panic, not an error).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// The field names serde's derive gave `T` (its keys, in declaration order).
///
/// Serde hands them to `deserialize_struct`; this deserializer only records
/// them, so the list of keys lives in one place: the struct.
pub(super) fn known_keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct FieldNames<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for FieldNames<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the field names were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// The parser's message about `key`'s value without the key and the position,
/// which the config error states on its own.
pub(super) fn reason(err: &serde_yaml::Error, key: &str) -> String {
    let mut text = err.to_string();
    if let Some(at) = err.location() {
        let position = format!(" at line {} column {}", at.line(), at.column());
        if let Some(stripped) = text.strip_suffix(&position) {
            text = stripped.to_string();
        }
    }
    match text.strip_prefix(key) {
        Some(rest) => rest.strip_prefix(": ").unwrap_or(rest).to_string(),
        None => text,
    }
}

/// A string that is not blank (a path, a cloud name).
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct NonEmpty(String);

impl TryFrom<String> for NonEmpty {
    type Error = &'static str;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.trim().is_empty() {
            Err("must not be empty")
        } else {
            Ok(NonEmpty(text))
        }
    }
}

/// A path (a non-empty string).
pub(super) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    NonEmpty::deserialize(d).map(|text| PathBuf::from(text.0))
}

/// A path, or `null`.
pub(super) fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(Option::<NonEmpty>::deserialize(d)?.map(|text| PathBuf::from(text.0)))
}

/// A name, or `null`.
pub(super) fn optional_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<NonEmpty>::deserialize(d)?.map(|text| text.0))
}

/// A list of paths.
pub(super) fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(Vec::<NonEmpty>::deserialize(d)?
        .into_iter()
        .map(|text| PathBuf::from(text.0))
        .collect())
}

/// A whole number from `MIN` to `MAX` (a count: uploads, tries).
///
/// Checked inside the visitor, so the error keeps its line; a number of another
/// kind (`1e30`, `2.5`, `-1`) or a word is refused with the range it must be in.
pub(super) fn count<'de, const MIN: u64, const MAX: u64, D: Deserializer<'de>>(
    d: D,
) -> Result<usize, D::Error> {
    let n = d.deserialize_any(CountVisitor { min: MIN, max: MAX })?;
    usize::try_from(n).map_err(|_| de::Error::custom(CountVisitor::out_of_range(MIN, MAX)))
}

/// Reads a count, refusing what is not a whole number in `min..=max`.
struct CountVisitor {
    /// The smallest value allowed.
    min: u64,
    /// The largest value allowed.
    max: u64,
}

impl CountVisitor {
    fn out_of_range(min: u64, max: u64) -> String {
        format!("out of range: expected a whole number from {min} to {max}")
    }

    fn refuse<E: de::Error>(&self, what: impl fmt::Display) -> E {
        E::custom(format!(
            "{what} is {}",
            Self::out_of_range(self.min, self.max)
        ))
    }
}

impl Visitor<'_> for CountVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from {} to {}", self.min, self.max)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
        if (self.min..=self.max).contains(&n) {
            Ok(n)
        } else {
            Err(self.refuse(n))
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(self.refuse(n)),
        }
    }

    fn visit_u128<E: de::Error>(self, n: u128) -> Result<u64, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(self.refuse(n)),
        }
    }

    fn visit_i128<E: de::Error>(self, n: i128) -> Result<u64, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(self.refuse(n)),
        }
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<u64, E> {
        Err(E::custom(format!(
            "{n:e} is not a whole number: expected a whole number from {} to {}",
            self.min, self.max
        )))
    }
}

/// A humantime duration (`90s`, `10m`, `1h`) from `MIN_SECS` seconds to 100
/// years (the contract's range for every duration, unless a key allows zero).
pub(super) fn duration<'de, const MIN_SECS: u64, D: Deserializer<'de>>(
    d: D,
) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor {
        min: Duration::from_secs(MIN_SECS),
    })
}

/// Reads a duration, checked inside the visitor so the error keeps its position.
struct DurationVisitor {
    /// The shortest duration allowed.
    min: Duration,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"90s\", \"10m\" or \"1h\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let parsed = humantime::parse_duration(text.trim()).map_err(|err| {
            E::custom(format!(
                "'{text}' is not a duration such as \"90s\", \"10m\" or \"1h\": {err}"
            ))
        })?;
        if parsed > MAX_DURATION {
            return Err(E::custom(format!(
                "'{text}' is longer than 100 years, more than any setting needs"
            )));
        }
        if parsed < self.min {
            return Err(E::custom(if parsed.is_zero() {
                "must be longer than zero (at least 1s)".to_string()
            } else {
                format!(
                    "'{text}' is out of range: expected from {} to 100 years",
                    humantime::format_duration(self.min)
                )
            }));
        }
        Ok(parsed)
    }
}
