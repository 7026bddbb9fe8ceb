//! A verified image is never deleted by a stop or a crash: once recorded kept,
//! an interrupted job ends `succeeded` for its cloud with the kept answer.

use serde_json::json;

use super::tests::{new_job, open};
use super::*;

fn answer(id: &str) -> serde_json::Value {
    json!({"id": id, "prune_incomplete": true})
}

#[tokio::test]
async fn a_restart_keeps_a_verified_image_and_the_job_succeeds_with_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = jobs
        .submit(new_job("kept", None))
        .await
        .unwrap()
        .task
        .unwrap();
    let id = task.id();
    let _slot = task.acquire_slot().await.unwrap();
    task.image_created("one", "img-new").await.unwrap();
    task.advance(JobState::Verifying).await.unwrap();
    task.image_kept("one", "img-new", answer("img-new"))
        .await
        .unwrap();
    task.advance(JobState::Pruning).await.unwrap();
    // A crash: the task is gone without a word, the record is what is on disk.
    std::mem::forget(task);
    drop(jobs);

    let (jobs, recovery) = open(dir.path(), 2);
    assert!(
        recovery.images_to_delete.is_empty(),
        "{:?}",
        recovery.images_to_delete
    );
    let handle = jobs.handle(&id).unwrap();
    let record = handle.record();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.image_id.as_deref(), Some("img-new"));
    assert_eq!(record.error, None);
    assert_eq!(handle.outcome(), Some(answer("img-new")));
}

#[tokio::test]
async fn an_image_not_yet_kept_is_still_deleted_and_the_job_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = jobs
        .submit(new_job("cut", None))
        .await
        .unwrap()
        .task
        .unwrap();
    let id = task.id();
    let _slot = task.acquire_slot().await.unwrap();
    task.image_created("one", "img-cut").await.unwrap();
    std::mem::forget(task);
    drop(jobs);

    let (jobs, recovery) = open(dir.path(), 2);
    let ids: Vec<_> = recovery
        .images_to_delete
        .iter()
        .map(|i| &i.image_id)
        .collect();
    assert_eq!(ids, ["img-cut"]);
    let record = jobs.get(&id).unwrap();
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.error.unwrap().code, "interrupted");
}

#[tokio::test]
async fn the_end_of_the_grace_keeps_each_clouds_verified_image() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let mut new = new_job("fan", None);
    new.clouds = vec!["a".into(), "b".into()];
    new.per_cloud = true;
    let task = jobs.submit(new).await.unwrap().task.unwrap();
    let handle = task.handle();
    let _slot = task.acquire_slot().await.unwrap();
    task.image_created("a", "img-a").await.unwrap();
    task.image_created("b", "img-b").await.unwrap();
    task.image_kept("a", "img-a", answer("img-a"))
        .await
        .unwrap();
    assert!(
        task.image_kept("a", "img-other", answer("x"))
            .await
            .is_err(),
        "only an image the job made can be kept"
    );

    jobs.close();
    let to_delete = jobs.interrupt_unfinished("grace ended").await;
    let ids: Vec<_> = to_delete.iter().map(|i| i.image_id.as_str()).collect();
    assert_eq!(ids, ["img-b"], "a's image is verified and kept");
    let record = handle.record();
    assert_eq!(record.state, JobState::Failed, "b did not succeed");
    let clouds = record.clouds.unwrap();
    assert_eq!(clouds["a"].state, JobState::Succeeded);
    assert_eq!(clouds["a"].image_id.as_deref(), Some("img-a"));
    assert_eq!(clouds["b"].state, JobState::Failed);
    let outcome = handle.outcome().unwrap();
    assert_eq!(outcome["results"]["a"], answer("img-a"));
    assert_eq!(outcome["results"]["b"]["error"]["code"], "interrupted");
    std::mem::forget(task);
}
