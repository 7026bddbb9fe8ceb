//! Stage "verify": what Glance reports of an image against what was read from
//! the file. Pure functions: no I/O, no clock.

use super::reader::Digests;
use crate::images::source::HashAlgo;
use crate::openstack::glance::Image;

/// How an image differs from the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Mismatch {
    #[error("Glance stored {} bytes, we sent {sent}", stored.map_or("an unknown number of".to_string(), |n| n.to_string()))]
    Size { stored: Option<u64>, sent: u64 },
    #[error("checksum (md5) is {}, the file's is {file}", stored.as_deref().unwrap_or("missing"))]
    Md5 {
        stored: Option<String>,
        file: String,
    },
    #[error("os_hash_value ({}) is {stored}, the file's is {file}", algo.name())]
    OsHash {
        algo: HashAlgo,
        stored: String,
        file: String,
    },
    /// Glance reports a hash this daemon cannot compute.
    #[error("unsupported os_hash_algo '{0}'")]
    UnsupportedAlgo(String),
    /// Glance hashed with an algorithm that was not computed while streaming:
    /// hash the file with it and verify again.
    #[error("os_hash_algo {} was not computed while streaming", .0.name())]
    NotComputed(HashAlgo),
}

/// The image holds exactly the file's bytes: the same size, md5 and, when Glance
/// reports one, `os_hash_value` by its `os_hash_algo`.
pub(crate) fn verify(image: &Image, digests: &Digests) -> Result<(), Mismatch> {
    if image.size != Some(digests.size) {
        return Err(Mismatch::Size {
            stored: image.size,
            sent: digests.size,
        });
    }
    if image.checksum.as_deref() != Some(digests.md5.as_str()) {
        return Err(Mismatch::Md5 {
            stored: image.checksum.clone(),
            file: digests.md5.clone(),
        });
    }
    let Some(stored) = &image.os_hash_value else {
        // A Glance without multihash: size and md5 are all it reports.
        return Ok(());
    };
    let (algo, file) = file_hash(image, digests)?;
    if stored != file {
        return Err(Mismatch::OsHash {
            algo,
            stored: stored.clone(),
            file: file.to_string(),
        });
    }
    Ok(())
}

/// For `skip_unchanged`: whether `image` (the newest active image of the name)
/// already holds the file's bytes: the same size and `os_hash_value` by the same
/// `os_hash_algo`. An image without `os_hash_value` is never taken as unchanged.
pub(crate) fn unchanged(image: &Image, digests: &Digests) -> Result<bool, Mismatch> {
    let Some(stored) = &image.os_hash_value else {
        return Ok(false);
    };
    if image.size != Some(digests.size) {
        return Ok(false);
    }
    let (_, file) = file_hash(image, digests)?;
    Ok(stored == file)
}

/// The file's hash by the image's `os_hash_algo`.
fn file_hash<'d>(image: &Image, digests: &'d Digests) -> Result<(HashAlgo, &'d str), Mismatch> {
    let reported = image.os_hash_algo.as_deref().unwrap_or("");
    let algo =
        HashAlgo::parse(reported).ok_or_else(|| Mismatch::UnsupportedAlgo(reported.to_string()))?;
    let file = digests.os_hash(algo).ok_or(Mismatch::NotComputed(algo))?;
    Ok((algo, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests() -> Digests {
        Digests {
            size: 10,
            md5: "m".into(),
            os_hashes: vec![(HashAlgo::Sha512, "s512".into())],
        }
    }

    fn image(
        size: Option<u64>,
        md5: Option<&str>,
        algo: Option<&str>,
        value: Option<&str>,
    ) -> Image {
        serde_json::from_value(serde_json::json!({
            "id": "i", "status": "active", "created_at": "2026-01-01T00:00:00Z",
            "size": size, "checksum": md5, "os_hash_algo": algo, "os_hash_value": value,
        }))
        .unwrap()
    }

    #[test]
    fn the_same_bytes_verify() {
        let good = image(Some(10), Some("m"), Some("sha512"), Some("s512"));
        assert_eq!(verify(&good, &digests()), Ok(()));
        assert_eq!(unchanged(&good, &digests()), Ok(true));
    }

    #[test]
    fn a_glance_without_multihash_is_verified_by_size_and_md5() {
        let old = image(Some(10), Some("m"), None, None);
        assert_eq!(verify(&old, &digests()), Ok(()));
        assert_eq!(
            unchanged(&old, &digests()),
            Ok(false),
            "never skipped on md5 alone"
        );
    }

    #[test]
    fn another_size_is_a_size_mismatch() {
        let short = image(Some(9), Some("m"), Some("sha512"), Some("s512"));
        assert_eq!(
            verify(&short, &digests()),
            Err(Mismatch::Size {
                stored: Some(9),
                sent: 10
            })
        );
        let unknown = image(None, Some("m"), Some("sha512"), Some("s512"));
        let err = verify(&unknown, &digests()).unwrap_err();
        assert_eq!(
            err,
            Mismatch::Size {
                stored: None,
                sent: 10
            }
        );
        assert_eq!(
            err.to_string(),
            "Glance stored an unknown number of bytes, we sent 10"
        );
        assert_eq!(unchanged(&short, &digests()), Ok(false));
    }

    #[test]
    fn another_md5_is_an_md5_mismatch() {
        let bad = image(Some(10), Some("x"), Some("sha512"), Some("s512"));
        assert_eq!(
            verify(&bad, &digests()),
            Err(Mismatch::Md5 {
                stored: Some("x".into()),
                file: "m".into()
            })
        );
        let missing = image(Some(10), None, Some("sha512"), Some("s512"));
        assert!(matches!(
            verify(&missing, &digests()),
            Err(Mismatch::Md5 { stored: None, .. })
        ));
    }

    #[test]
    fn another_os_hash_value_is_an_os_hash_mismatch() {
        let bad = image(Some(10), Some("m"), Some("sha512"), Some("other"));
        let err = verify(&bad, &digests()).unwrap_err();
        assert_eq!(
            err,
            Mismatch::OsHash {
                algo: HashAlgo::Sha512,
                stored: "other".into(),
                file: "s512".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "os_hash_value (sha512) is other, the file's is s512"
        );
        assert_eq!(unchanged(&bad, &digests()), Ok(false));
    }

    #[test]
    fn an_algo_we_did_not_compute_asks_for_it_and_then_verifies() {
        let img = image(Some(10), Some("m"), Some("sha256"), Some("s256"));
        assert_eq!(
            verify(&img, &digests()),
            Err(Mismatch::NotComputed(HashAlgo::Sha256))
        );
        assert_eq!(
            unchanged(&img, &digests()),
            Err(Mismatch::NotComputed(HashAlgo::Sha256))
        );
        let mut more = digests();
        more.add_os_hash(HashAlgo::Sha256, "s256".into());
        assert_eq!(verify(&img, &more), Ok(()));
        assert_eq!(unchanged(&img, &more), Ok(true));
    }

    #[test]
    fn an_algo_we_cannot_compute_is_refused() {
        let img = image(Some(10), Some("m"), Some("blake3"), Some("b"));
        assert_eq!(
            verify(&img, &digests()),
            Err(Mismatch::UnsupportedAlgo("blake3".into()))
        );
        let no_algo = image(Some(10), Some("m"), None, Some("b"));
        assert_eq!(
            verify(&no_algo, &digests()),
            Err(Mismatch::UnsupportedAlgo(String::new()))
        );
    }
}
