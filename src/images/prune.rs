//! Which images of a name to delete after a successful upload: pure logic, so every
//! rule of the contract is unit tested without a cloud.

use chrono::{DateTime, Utc};

use super::MARKER_DAEMON;
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

/// Whether `image` came before the new image `new`: it is older in Glance's
/// order, or it is this daemon's own (`own_daemon`, its marker) of the same
/// second. This daemon's uploads of one name take turns, so its image of the
/// same second finished before the new one was created, whatever the ids say;
/// another unit's of the same second is ordered by id, as Glance orders it.
fn came_before(image: &Image, new: &Image, own_daemon: &str) -> bool {
    order_key(image) < order_key(new)
        || (image.created_at == new.created_at && image.property(MARKER_DAEMON) == Some(own_daemon))
}

closed_set! {
    /// The request's `retire`: what happens to revisions past `num_revisions`.
    #[derive(Default)]
    pub(crate) enum Retire {
        /// Deleted.
        #[default]
        Delete = "delete",
        /// Hidden (`os_hidden: true`): bootable by id for rebuilds, listed nowhere;
        /// hidden ones past a further `num_revisions` are deleted.
        Hide = "hide",
    }
}

/// What to do with the images of one name after a verified upload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PrunePlan {
    /// Deleted.
    pub(crate) delete: Vec<String>,
    /// Hidden (`os_hidden: true`), with `retire: hide`.
    pub(crate) hide: Vec<String>,
}

/// Whether Glance hides the image from listings (`os_hidden`).
pub(crate) fn is_hidden(image: &Image) -> bool {
    image.extra.get("os_hidden").and_then(|v| v.as_bool()) == Some(true)
}

/// What to do with the images of one name, given every image of that name (any
/// status; hidden ones too with `retire: hide`):
///
/// - visible active images, newest first (`created_at`, then id): the new image
///   and the newest others are kept up to `num_revisions` in all; the rest are
///   retired (deleted, or hidden with [`Retire::Hide`]), except a protected
///   image (counted when among the kept, never retired) and an image newer than
///   the new one ([`came_before`]): that is another unit's upload, which prunes
///   after it, so the newest image always survives and "latest" is never empty
///   (the count may exceed `num_revisions` until the next upload);
/// - with [`Retire::Hide`], the hidden active images (those hidden before and
///   those hidden now), newest first: the newest `num_revisions` stay hidden,
///   the rest are deleted (one retired now and already past them is deleted
///   rather than hidden first);
/// - unfinished uploads older than `stale_age` go (whoever made them); younger
///   ones are never touched: another unit may be uploading;
/// - the new image is never deleted.
pub(crate) fn plan_prune(
    images: &[Image],
    new_id: &str,
    num_revisions: u32,
    retire: Retire,
    now: DateTime<Utc>,
    stale_age: std::time::Duration,
    own_daemon: &str,
) -> PrunePlan {
    // Without the new image in the list we cannot tell which images are newer
    // than it: retire no active image rather than guess.
    let newest_kept = images.iter().find(|i| i.id == new_id);
    let retirable = |i: &&Image| {
        i.is_active()
            && i.id != new_id
            && !i.protected
            && newest_kept.is_some_and(|n| came_before(i, n, own_daemon))
    };
    let mut visible: Vec<&Image> = images
        .iter()
        .filter(|i| i.is_active() && i.id != new_id && !is_hidden(i))
        .collect();
    visible.sort_by(|a, b| order_key(b).cmp(&order_key(a)));
    let keep_others = num_revisions.saturating_sub(1) as usize;
    let retired: Vec<&Image> = match newest_kept {
        None => Vec::new(),
        Some(_) => visible
            .into_iter()
            .skip(keep_others)
            .filter(|i| retirable(i))
            .collect(),
    };
    let mut plan = PrunePlan::default();
    match retire {
        Retire::Delete => plan.delete = retired.iter().map(|i| i.id.clone()).collect(),
        Retire::Hide => {
            let mut hidden: Vec<&Image> = images
                .iter()
                .filter(|i| i.is_active() && is_hidden(i))
                .chain(retired.iter().copied())
                .collect();
            // In one second, an image retired now is newer than one hidden
            // before: revisions are retired in the order they were made.
            let retired_now = |i: &Image| retired.iter().any(|r| r.id == i.id);
            hidden.sort_by(|a, b| {
                let key = |i: &Image| (i.created_at, retired_now(i), i.id.clone());
                key(b).cmp(&key(a))
            });
            for (rank, image) in hidden.into_iter().enumerate() {
                let is_new = retired_now(image);
                if rank < num_revisions as usize {
                    if is_new {
                        plan.hide.push(image.id.clone());
                    }
                } else if retirable(&image) {
                    plan.delete.push(image.id.clone());
                }
            }
        }
    }
    plan.delete.extend(
        images
            .iter()
            .filter(|i| i.id != new_id && !i.protected && is_stale(i, now, stale_age))
            .map(|i| i.id.clone()),
    );
    plan
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
    /// The pruning daemon's id (its images carry it in `MARKER_DAEMON`).
    const OWN: &str = "this-daemon";

    fn own(mut image: Image) -> Image {
        image.extra.insert(MARKER_DAEMON.into(), OWN.into());
        image
    }

    fn deleted(plan: PrunePlan) -> Vec<String> {
        assert!(plan.hide.is_empty(), "retire: delete hides nothing");
        plan.delete
    }

    fn hidden(mut image: Image) -> Image {
        image.extra.insert("os_hidden".into(), true.into());
        image
    }

    fn hide_plan(images: &[Image], new_id: &str, num_revisions: u32) -> (Vec<String>, Vec<String>) {
        let plan = plan_prune(
            images,
            new_id,
            num_revisions,
            Retire::Hide,
            now(),
            HOUR,
            OWN,
        );
        (plan.hide, plan.delete)
    }

    #[test]
    fn retire_hide_hides_past_num_revisions_and_deletes_past_as_many_hidden() {
        // The API test's four uploads with num_revisions 1, one plan each.
        let v = |id: &str, m: i64| image(id, Active, m, false);
        let h = |id: &str, m: i64| hidden(image(id, Active, m, false));
        let none: Vec<String> = Vec::new();
        assert_eq!(
            hide_plan(&[v("a", 30)], "a", 1),
            (none.clone(), none.clone())
        );
        assert_eq!(
            hide_plan(&[v("b", 20), v("a", 30)], "b", 1),
            (vec!["a".to_string()], none.clone())
        );
        assert_eq!(
            hide_plan(&[v("c", 10), v("b", 20), h("a", 30)], "c", 1),
            (vec!["b".to_string()], vec!["a".to_string()])
        );
        // Two hidden kept with num_revisions 2; an older third is deleted.
        assert_eq!(
            hide_plan(
                &[v("n", 0), v("d", 5), v("c", 10), h("b", 20), h("a", 30)],
                "n",
                2
            ),
            (vec!["c".to_string()], vec!["a".to_string()])
        );
    }

    #[test]
    fn retire_hide_deletes_rather_than_hides_what_is_already_past_the_hidden_ones() {
        // Three visible old revisions at once, num_revisions 1: one hidden, two deleted.
        let images = vec![
            image("new", Active, 0, false),
            image("a", Active, 10, false),
            image("b", Active, 20, false),
            image("c", Active, 30, false),
        ];
        assert_eq!(
            hide_plan(&images, "new", 1),
            (
                vec!["a".to_string()],
                vec!["b".to_string(), "c".to_string()]
            )
        );
    }

    #[test]
    fn retire_hide_never_touches_protected_newer_or_unknown_new_images() {
        let images = vec![
            image("newer", Active, 0, false),
            image("new", Active, 1, false),
            image("p", Active, 10, true),
            hidden(image("hp", Active, 20, true)),
            hidden(image("h", Active, 30, false)),
        ];
        // p is protected: stays visible. hp counts among the hidden, h is past it.
        assert_eq!(
            hide_plan(&images, "new", 1),
            (Vec::new(), vec!["h".to_string()])
        );
        // Without the new image listed, nothing active is retired.
        assert_eq!(hide_plan(&images, "gone", 1), (Vec::new(), Vec::new()));
        assert_eq!("hide".parse::<Retire>().unwrap(), Retire::Hide);
        assert_eq!(Retire::default(), Retire::Delete);
        assert!("archive".parse::<Retire>().is_err());
    }

    #[test]
    fn keeps_the_newest_revisions_and_deletes_the_rest() {
        let images = vec![
            image("new", Active, 0, false),
            image("a", Active, 10, false),
            image("b", Active, 20, false),
            image("c", Active, 30, false),
        ];
        assert_eq!(
            deleted(plan_prune(
                &images,
                "new",
                2,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["b", "c"]
        );
        assert_eq!(
            deleted(plan_prune(
                &images,
                "new",
                1,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["a", "b", "c"]
        );
        assert!(deleted(plan_prune(
            &images,
            "new",
            4,
            Retire::Delete,
            now(),
            HOUR,
            OWN
        ))
        .is_empty());
    }

    #[test]
    fn an_image_newer_than_the_new_one_is_never_deleted() {
        // Unit A's slow upload ("new") ends after unit B's newer one ("b").
        let images = vec![
            image("b", Active, 0, false),
            image("new", Active, 1, false),
            image("old", Active, 5, false),
        ];
        assert_eq!(
            deleted(plan_prune(
                &images,
                "new",
                1,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["old"]
        );
        // B prunes after A: A's image is older than B's, so it goes.
        assert_eq!(
            deleted(plan_prune(
                &images,
                "b",
                1,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["new", "old"]
        );
    }

    #[test]
    fn in_the_same_second_this_daemons_own_image_came_before_the_new_one() {
        // Two uploads of one name by this daemon within a second: they took turns,
        // so "z" is the older, whatever its id; another unit's "y" keeps Glance's order.
        let images = vec![
            image("a", Active, 0, false),
            own(image("z", Active, 0, false)),
            image("y", Active, 0, false),
        ];
        assert_eq!(
            deleted(plan_prune(
                &images,
                "a",
                1,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["z"]
        );
        assert_eq!(
            hide_plan(&images, "a", 1),
            (vec!["z".to_string()], Vec::new())
        );
    }

    #[test]
    fn in_the_same_second_the_revision_retired_now_is_newer_than_one_hidden_before() {
        // Four uploads within a second, num_revisions 1: the previous upload hid
        // one revision and this one retires another; whatever the ids say, the
        // one retired now stays hidden and the one hidden before goes.
        for (retired_now, hidden_before) in [("c", "b"), ("b", "c")] {
            let images = vec![
                own(image("d", Active, 0, false)),
                own(image(retired_now, Active, 0, false)),
                hidden(own(image(hidden_before, Active, 0, false))),
            ];
            assert_eq!(
                hide_plan(&images, "d", 1),
                (
                    vec![retired_now.to_string()],
                    vec![hidden_before.to_string()]
                )
            );
        }
    }

    #[test]
    fn in_the_same_second_the_larger_id_is_the_newer() {
        // Glance's created_at has whole seconds: two uploads that finish together.
        let images = vec![image("a", Active, 0, false), image("z", Active, 0, false)];
        assert!(deleted(plan_prune(
            &images,
            "a",
            1,
            Retire::Delete,
            now(),
            HOUR,
            OWN
        ))
        .is_empty());
        assert_eq!(
            deleted(plan_prune(
                &images,
                "z",
                1,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["a"]
        );
    }

    #[test]
    fn without_the_new_image_in_the_list_no_active_image_is_deleted() {
        let images = vec![
            image("a", Active, 1, false),
            image("b", Active, 2, false),
            image("stale", Queued, 120, false),
        ];
        assert_eq!(
            deleted(plan_prune(
                &images,
                "gone",
                1,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["stale"]
        );
    }

    #[test]
    fn equal_creation_times_are_ordered_by_id() {
        let images = vec![
            image("new", Active, 0, false),
            image("a", Active, 10, false),
            image("b", Active, 10, false),
        ];
        assert_eq!(
            deleted(plan_prune(
                &images,
                "new",
                2,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["a"]
        );
    }

    #[test]
    fn protected_images_count_but_are_never_deleted() {
        let images = vec![
            image("new", Active, 0, false),
            image("p", Active, 10, true),
            image("a", Active, 20, false),
            image("old-p", Active, 30, true),
        ];
        assert_eq!(
            deleted(plan_prune(
                &images,
                "new",
                2,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["a"]
        );
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
            deleted(plan_prune(
                &images,
                "new",
                1,
                Retire::Delete,
                now(),
                HOUR,
                OWN
            )),
            vec!["stale", "killed"]
        );
    }
}
