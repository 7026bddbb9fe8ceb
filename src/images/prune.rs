//! Which images of a name to delete after a successful upload: pure logic, so every
//! rule of the contract is unit tested without a cloud.

use chrono::{DateTime, Utc};

use crate::openstack::glance::Image;

/// Whether an unfinished upload ([`is_unfinished_upload`]) is old
/// enough to be called abandoned.
///
/// [`is_unfinished_upload`]: crate::openstack::glance::ImageStatus::is_unfinished_upload
pub(crate) fn is_stale(image: &Image, now: DateTime<Utc>, stale_age: std::time::Duration) -> bool {
    let age = now.signed_duration_since(image.created_at);
    image.status.is_unfinished_upload() && age.to_std().is_ok_and(|age| age > stale_age)
}

/// The images of one name to delete, given every image of that name (any status):
///
/// - active images, newest first (`created_at`, then id): the new image and the
///   newest others are kept up to `num_revisions` in all; the rest go, except a
///   protected image (counted when among the kept, never deleted);
/// - unfinished uploads older than `stale_age` go (whoever made them); younger
///   ones are never touched: another unit may be uploading;
/// - the new image is never deleted.
pub(crate) fn plan_prune(
    images: &[Image],
    new_id: &str,
    num_revisions: u32,
    now: DateTime<Utc>,
    stale_age: std::time::Duration,
) -> Vec<String> {
    let mut active: Vec<&Image> = images
        .iter()
        .filter(|i| i.is_active() && i.id != new_id)
        .collect();
    active.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    let keep_others = num_revisions.saturating_sub(1) as usize;
    let mut delete: Vec<String> = active
        .iter()
        .skip(keep_others)
        .filter(|i| !i.protected)
        .map(|i| i.id.clone())
        .collect();
    delete.extend(
        images
            .iter()
            .filter(|i| i.id != new_id && !i.protected && is_stale(i, now, stale_age))
            .map(|i| i.id.clone()),
    );
    delete
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openstack::glance::ImageStatus::{self, Active, Killed, Queued, Saving};
    use std::time::Duration;

    fn image(id: &str, status: ImageStatus, minutes_ago: i64, protected: bool) -> Image {
        let now: DateTime<Utc> = "2026-11-27T12:00:00Z".parse().unwrap();
        Image {
            id: id.into(),
            name: Some("n".into()),
            status,
            created_at: now - chrono::Duration::minutes(minutes_ago),
            size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            protected,
            owner: None,
            extra: Default::default(),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn keeps_the_newest_revisions_and_deletes_the_rest() {
        let images = vec![
            image("new", Active, 0, false),
            image("a", Active, 10, false),
            image("b", Active, 20, false),
            image("c", Active, 30, false),
        ];
        assert_eq!(plan_prune(&images, "new", 2, now(), HOUR), vec!["b", "c"]);
        assert_eq!(
            plan_prune(&images, "new", 1, now(), HOUR),
            vec!["a", "b", "c"]
        );
        assert!(plan_prune(&images, "new", 4, now(), HOUR).is_empty());
    }

    #[test]
    fn the_new_image_is_kept_even_when_another_is_newer() {
        let images = vec![
            image("other", Active, 0, false),
            image("new", Active, 1, false),
        ];
        assert_eq!(plan_prune(&images, "new", 1, now(), HOUR), vec!["other"]);
    }

    #[test]
    fn equal_creation_times_are_ordered_by_id() {
        let images = vec![
            image("new", Active, 0, false),
            image("a", Active, 10, false),
            image("b", Active, 10, false),
        ];
        assert_eq!(plan_prune(&images, "new", 2, now(), HOUR), vec!["a"]);
    }

    #[test]
    fn protected_images_count_but_are_never_deleted() {
        let images = vec![
            image("new", Active, 0, false),
            image("p", Active, 10, true),
            image("a", Active, 20, false),
            image("old-p", Active, 30, true),
        ];
        assert_eq!(plan_prune(&images, "new", 2, now(), HOUR), vec!["a"]);
    }

    #[test]
    fn young_unfinished_uploads_are_left_and_stale_ones_deleted() {
        let images = vec![
            image("new", Active, 0, false),
            image("young", Queued, 5, false),
            image("saving", Saving, 59, false),
            image("stale", Queued, 61, false),
            image("killed", Killed, 120, false),
            image("stale-protected", Queued, 120, true),
            image("deactivated", ImageStatus::Deactivated, 600, false),
        ];
        assert_eq!(
            plan_prune(&images, "new", 1, now(), HOUR),
            vec!["stale", "killed"]
        );
    }
}
