//! What a job is: its id, its state and the order states move in, the record
//! `GET /v1/jobs/{id}` shows, and the `Idempotency-Key` that names a retried request.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a job's request must be: the upload fields, stored in the record and
/// compared (by [`Fingerprint`]) when a request is retried under the same key.
///
/// No secret can get into a record through it: the crate's `Secret` has no
/// `Serialize`, so a request type that held one would not compile here.
pub trait JobRequest: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> JobRequest for T {}

/// A job's id: 128 random bits in lowercase hex, as in `/v1/jobs/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId([u8; 16]);

/// A string that is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a job id (32 lowercase hex digits)")]
pub struct InvalidJobId(pub String);

impl JobId {
    /// A fresh id from the thread-local CSPRNG.
    pub fn random() -> JobId {
        JobId(rand::random())
    }
}

impl FromStr for JobId {
    type Err = InvalidJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower_hex = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut bytes = [0u8; 16];
        match hex::decode_to_slice(s, &mut bytes) {
            Ok(()) if lower_hex => Ok(JobId(bytes)),
            _ => Err(InvalidJobId(s.chars().take(64).collect())),
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a job (or one cloud of it) is. States only move forward along
/// `queued → uploading → verifying → pruning → succeeded` (steps may be skipped),
/// and any state that is not terminal may move to `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for an upload slot or for the name's lock.
    Queued,
    /// Sending the file.
    Uploading,
    /// Waiting for Glance to call the image active, comparing hashes.
    Verifying,
    /// Deleting old revisions.
    Pruning,
    Succeeded,
    Failed,
}

impl JobState {
    /// Every state, in the order they are counted and shown.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Uploading,
        JobState::Verifying,
        JobState::Pruning,
        JobState::Succeeded,
        JobState::Failed,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }

    /// Whether a job in `self` may move to `next`.
    pub fn can_move_to(self, next: JobState) -> bool {
        match next {
            JobState::Failed => !self.is_terminal(),
            _ => !self.is_terminal() && next.rank() > self.rank(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Uploading => "uploading",
            JobState::Verifying => "verifying",
            JobState::Pruning => "pruning",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    /// The position in [`JobState::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn rank(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job (or one cloud of it) failed: `{"code", "message"}` as in the API's
/// errors. `code` is one of the contract's error codes, or [`JobFailure::INTERRUPTED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    pub code: String,
    pub message: String,
}

impl JobFailure {
    /// The code of a job that a crash, a kill or the end of `shutdown_grace` cut off.
    pub const INTERRUPTED: &'static str = "interrupted";

    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        JobFailure {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::new(Self::INTERRUPTED, message)
    }
}

/// One cloud of a job of several clouds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudProgress {
    pub state: JobState,
    pub bytes_sent: u64,
    pub image_id: Option<String>,
    pub error: Option<JobFailure>,
    /// The try under way (or the last one): transient faults are retried.
    #[serde(default = "first_attempt")]
    pub attempts: u32,
}

fn first_attempt() -> u32 {
    1
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "R: JobRequest")]
pub struct JobRecord<R> {
    pub job: JobId,
    pub state: JobState,
    /// Bytes of the file read and sent so far; it only grows.
    pub bytes_sent: u64,
    pub bytes_total: u64,
    /// The new image (for a job of one cloud).
    pub image_id: Option<String>,
    pub error: Option<JobFailure>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The upload fields as the client sent them.
    pub request: R,
    /// Per cloud, for a job of several clouds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clouds: Option<BTreeMap<String, CloudProgress>>,
}

impl<R> JobRecord<R> {
    /// The same record, its request as `view` sees it (a record's request may
    /// hold more than the wire shows).
    pub fn map_request<S>(self, view: impl FnOnce(R) -> S) -> JobRecord<S> {
        JobRecord {
            job: self.job,
            state: self.state,
            bytes_sent: self.bytes_sent,
            bytes_total: self.bytes_total,
            image_id: self.image_id,
            error: self.error,
            created_at: self.created_at,
            updated_at: self.updated_at,
            request: view(self.request),
            clouds: self.clouds,
        }
    }
}

/// An image a job created, so that a restart can delete what an interrupted job left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedImage {
    pub cloud: String,
    pub image_id: String,
    /// Set once the image is verified, before any prune: the cloud's answer as a
    /// stop or a crash would leave it. A kept image is never deleted by a stop
    /// or a restart; the job ends `succeeded` for that cloud with this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<serde_json::Value>,
}

/// The `Idempotency-Key` header: letters, digits and `-_.:`, 1 to 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

/// A header value that is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to {max} letters, digits or '-_.:'", max = IdempotencyKey::MAX_LEN)]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IdempotencyKey {
    type Err = InvalidIdempotencyKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.chars().all(allowed) {
            return Err(InvalidIdempotencyKey);
        }
        Ok(IdempotencyKey(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request's identity for idempotency: SHA-256 of its canonical JSON (object
/// keys sorted, no whitespace), so field order and spacing do not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of<R: Serialize>(request: &R) -> Result<Fingerprint, serde_json::Error> {
        let value = serde_json::to_value(request)?;
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Ok(Fingerprint(bytes))
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_ids_are_32_lowercase_hex_digits_and_round_trip() {
        let id = JobId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<JobId>().unwrap(), id);
        assert_ne!(JobId::random(), id);
        for bad in [
            "",
            "abc",
            &text.to_uppercase(),
            &format!("{text}0"),
            "../../etc/passwd",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert!(serde_json::from_str::<JobId>("\"zz\"").is_err());
    }

    #[test]
    fn states_only_move_forward_and_anything_unfinished_may_fail() {
        use JobState::*;
        assert!(Queued.can_move_to(Uploading));
        assert!(Uploading.can_move_to(Verifying));
        assert!(Verifying.can_move_to(Pruning));
        assert!(Pruning.can_move_to(Succeeded));
        assert!(
            Queued.can_move_to(Succeeded),
            "an unchanged image skips steps"
        );
        for from in [Queued, Uploading, Verifying, Pruning] {
            assert!(from.can_move_to(Failed), "{from}");
            assert!(!from.can_move_to(from), "{from} to itself");
        }
        assert!(!Verifying.can_move_to(Uploading));
        assert!(!Pruning.can_move_to(Queued));
        for next in JobState::ALL {
            assert!(!Succeeded.can_move_to(next), "succeeded to {next}");
            assert!(!Failed.can_move_to(next), "failed to {next}");
        }
        assert!(Succeeded.is_terminal() && Failed.is_terminal() && !Pruning.is_terminal());
        assert_eq!(serde_json::to_value(Verifying).unwrap(), json!("verifying"));
        for (i, s) in JobState::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn idempotency_keys_allow_letters_digits_and_four_marks() {
        for good in ["a", "hook-42_x.y:z", &"k".repeat(128)] {
            assert_eq!(good.parse::<IdempotencyKey>().unwrap().as_str(), good);
        }
        for bad in ["", "a b", "é", "a/b", &"k".repeat(129), "x\n"] {
            assert!(bad.parse::<IdempotencyKey>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<IdempotencyKey>("\"a/b\"").is_err());
    }

    #[test]
    fn a_fingerprint_ignores_field_order_but_not_values() {
        let a = json!({"base": "jammy", "props": {"x": "1", "y": "2"}, "n": 2});
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "n": 2, "props": {"y": "2", "x": "1"}, "base": "jammy" }"#)
                .unwrap();
        let c = json!({"base": "jammy", "props": {"x": "1", "y": "3"}, "n": 2});
        assert_eq!(Fingerprint::of(&a).unwrap(), Fingerprint::of(&b).unwrap());
        assert_ne!(Fingerprint::of(&a).unwrap(), Fingerprint::of(&c).unwrap());
    }

    #[test]
    fn a_record_of_one_cloud_has_exactly_the_contracts_fields() {
        let record = JobRecord {
            job: JobId::random(),
            state: JobState::Failed,
            bytes_sent: 1,
            bytes_total: 2,
            image_id: None,
            error: Some(JobFailure::interrupted("stopped")),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            request: json!({"base": "noble"}),
            clouds: None,
        };
        let value = serde_json::to_value(&record).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bytes_sent",
                "bytes_total",
                "created_at",
                "error",
                "image_id",
                "job",
                "request",
                "state",
                "updated_at"
            ]
        );
        assert_eq!(
            value["error"],
            json!({"code": "interrupted", "message": "stopped"})
        );
        let back: JobRecord<serde_json::Value> = serde_json::from_value(value).unwrap();
        assert_eq!(back, record);
    }
}
