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

/// How images are ordered, oldest to newest: `created_at` (whole seconds in
/// Glance), then id; the order of Glance's `sort=created_at:desc,id:desc`.
fn order_key(image: &Image) -> (DateTime<Utc>, &str) {
    (image.created_at, image.id.as_str())
}

/// The images of one name to delete, given every image of that name (any status):
///
/// - active images, newest first (`created_at`, then id): the new image and the
///   newest others are kept up to `num_revisions` in all; the rest go, except a
///   protected image (counted when among the kept, never deleted) and an image
///   newer than the new one: that is another unit's upload, which prunes after
///   it, so the newest image always survives and "latest" is never empty (the
///   count may exceed `num_revisions` until the next upload);
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
    // Without the new image in the list we cannot tell which images are newer
    // than it: delete no active image rather than guess.
    let newest_kept = images.iter().find(|i| i.id == new_id).map(order_key);
    let mut active: Vec<&Image> = images
        .iter()
        .filter(|i| i.is_active() && i.id != new_id)
        .collect();
    active.sort_by(|a, b| order_key(b).cmp(&order_key(a)));
    let keep_others = num_revisions.saturating_sub(1) as usize;
    let mut delete: Vec<String> = match newest_kept {
        None => Vec::new(),
        Some(new_key) => active
            .iter()
            .skip(keep_others)
            .filter(|i| !i.protected && order_key(i) < new_key)
            .map(|i| i.id.clone())
            .collect(),
    };
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
    fn an_image_newer_than_the_new_one_is_never_deleted() {
        // Unit A's slow upload ("new") ends after unit B's newer one ("b").
        let images = vec![
            image("b", Active, 0, false),
            image("new", Active, 1, false),
            image("old", Active, 5, false),
        ];
        assert_eq!(plan_prune(&images, "new", 1, now(), HOUR), vec!["old"]);
        // B prunes after A: A's image is older than B's, so it goes.
        assert_eq!(plan_prune(&images, "b", 1, now(), HOUR), vec!["new", "old"]);
    }

    #[test]
    fn in_the_same_second_the_larger_id_is_the_newer() {
        // Glance's created_at has whole seconds: two uploads that finish together.
        let images = vec![image("a", Active, 0, false), image("z", Active, 0, false)];
        assert!(plan_prune(&images, "a", 1, now(), HOUR).is_empty());
        assert_eq!(plan_prune(&images, "z", 1, now(), HOUR), vec!["a"]);
    }

    #[test]
    fn without_the_new_image_in_the_list_no_active_image_is_deleted() {
        let images = vec![
            image("a", Active, 1, false),
            image("b", Active, 2, false),
            image("stale", Queued, 120, false),
        ];
        assert_eq!(plan_prune(&images, "gone", 1, now(), HOUR), vec!["stale"]);
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
