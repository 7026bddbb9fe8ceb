//! A bounded queue: past `max_queued_uploads` queued jobs, a new one is refused.

use super::tests::{new_job, open};
use super::*;

#[tokio::test]
async fn past_max_queued_uploads_a_new_job_is_refused_until_one_leaves_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 1);
    let mut settings = jobs.settings();
    settings.max_queued_uploads = 2;
    jobs.replace_settings(settings);
    let first = jobs.submit(new_job("a", None)).await.unwrap().task.unwrap();
    let _second = jobs.submit(new_job("b", None)).await.unwrap().task.unwrap();
    let refused = jobs.submit(new_job("c", None)).await.unwrap_err();
    assert!(matches!(
        refused,
        JobsError::TooManyUploads { queued: 2, retry_after } if retry_after == QUEUE_FULL_RETRY_AFTER
    ));
    assert_eq!(refused.code(), "too_many_uploads");
    assert!(jobs.check_room().is_err());
    assert_eq!(
        jobs.counts().get(JobState::Queued),
        2,
        "the refused job was not made"
    );
    // A retry of a queued job under its key is no new job: it is answered.
    let keyed = jobs.submit(new_job("k", Some("key"))).await;
    assert!(keyed.is_err());
    let _slot = first.acquire_slot().await.unwrap();
    assert!(jobs.check_room().is_ok());
    assert!(jobs.submit(new_job("c", None)).await.is_ok());
}
