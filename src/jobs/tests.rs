//! The jobs module as the daemon will use it: a real directory, real files, a
//! paused clock where time matters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::job::PROGRESS_PERSIST_INTERVAL;
use super::*;

/// A request shaped like the upload fields (typed, as the wiring will be).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Upload {
    base: String,
    app_name: String,
    num_revisions: u32,
}

fn upload(app_name: &str) -> Upload {
    Upload {
        base: "jammy".into(),
        app_name: app_name.into(),
        num_revisions: 2,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn settings(max_concurrent_uploads: usize) -> JobSettings {
    JobSettings {
        max_concurrent_uploads,
        job_retention: 24 * HOUR,
        max_queued_uploads: 64,
    }
}

pub(super) fn open(dir: &Path, max: usize) -> (Jobs<Upload>, Recovery) {
    Jobs::open(dir, settings(max)).expect("open the jobs directory")
}

pub(super) fn new_job(app_name: &str, key: Option<&str>) -> NewJob<Upload> {
    NewJob {
        id: JobId::random(),
        request: upload(app_name),
        idempotency_key: key.map(|k| k.parse().unwrap()),
        bytes_total: 1000,
        clouds: vec!["one".into()],
        per_cloud: false,
    }
}

/// The record as it is on disk, read as the next daemon would.
fn on_disk(dir: &Path, id: &JobId) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("jobs").join(format!("{id}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn start(jobs: &Jobs<Upload>, app_name: &str, key: Option<&str>) -> JobTask<Upload> {
    jobs.submit(new_job(app_name, key))
        .await
        .unwrap()
        .task
        .expect("a new job")
}

#[tokio::test]
async fn a_job_moves_through_its_states_and_each_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = start(&jobs, "runner", None).await;
    let id = task.id();
    let waiter = {
        let handle = task.handle();
        tokio::spawn(async move { handle.wait_finished().await })
    };
    assert_eq!(on_disk(dir.path(), &id)["record"]["state"], "queued");

    let _slot = task.acquire_slot().await.unwrap();
    assert_eq!(on_disk(dir.path(), &id)["record"]["state"], "uploading");
    task.image_created("one", "img-1").await.unwrap();
    assert_eq!(on_disk(dir.path(), &id)["images"][0]["image_id"], "img-1");
    task.bytes_sent().add(600);
    task.bytes_sent().add(400);
    task.advance(JobState::Verifying).await.unwrap();
    assert_eq!(on_disk(dir.path(), &id)["record"]["bytes_sent"], 1000);
    task.advance(JobState::Pruning).await.unwrap();
    let done = task.succeed("img-1").await.unwrap();

    assert_eq!(done.state, JobState::Succeeded);
    let waited = waiter.await.unwrap();
    assert_eq!(waited.state, JobState::Succeeded);
    assert_eq!(waited.image_id.as_deref(), Some("img-1"));
    assert_eq!((waited.bytes_sent, waited.bytes_total), (1000, 1000));
    assert_eq!(waited.request, upload("runner"));
    assert!(waited.updated_at >= waited.created_at);
    let disk = on_disk(dir.path(), &id);
    assert_eq!(disk["record"]["state"], "succeeded");
    assert_eq!(disk["record"]["image_id"], "img-1");
    assert_eq!(jobs.get(&id).unwrap(), waited);
}

#[tokio::test]
async fn a_backwards_move_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = start(&jobs, "runner", None).await;
    let _slot = task.acquire_slot().await.unwrap();
    task.advance(JobState::Verifying).await.unwrap();
    for back in [JobState::Uploading, JobState::Queued, JobState::Verifying] {
        let err = task.advance(back).await.unwrap_err();
        assert!(
            matches!(err, JobsError::IllegalTransition { from: JobState::Verifying, to, .. } if to == back),
            "{err}"
        );
    }
    // Terminal states go through succeed/fail only.
    assert!(task.advance(JobState::Succeeded).await.is_err());
    assert_eq!(task.handle().state(), JobState::Verifying);
    assert_eq!(
        on_disk(dir.path(), &task.id())["record"]["state"],
        "verifying"
    );
    let handle = task.handle();
    task.fail(JobFailure::new("upload_image_failed", "checksum mismatch"))
        .await
        .unwrap();
    let record = handle.record();
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.error.unwrap().code, "upload_image_failed");
}

#[tokio::test]
async fn bytes_sent_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = start(&jobs, "runner", None).await;
    let bytes = task.bytes_sent();
    assert_eq!(bytes.add(100), 100);
    assert_eq!(bytes.advance_to(50), 100, "a lower count is ignored");
    assert_eq!(task.handle().record().bytes_sent, 100);
    assert_eq!(bytes.advance_to(300), 300);
    assert_eq!(task.handle().record().bytes_sent, 300);
}

#[tokio::test]
async fn the_same_key_and_request_get_the_same_job_and_another_request_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = start(&jobs, "runner", Some("hook-1")).await;

    let again = jobs
        .submit(new_job("runner", Some("hook-1")))
        .await
        .unwrap();
    assert_eq!(again.handle.id(), task.id());
    assert!(again.task.is_none(), "a retry uploads nothing");

    let err = jobs
        .submit(new_job("other", Some("hook-1")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, JobsError::Conflict { job, .. } if job == task.id()),
        "{err}"
    );
    assert_eq!(err.code(), "conflict");

    // After the job ended, the key still names it.
    task.succeed("img").await.unwrap();
    let after = jobs
        .submit(new_job("runner", Some("hook-1")))
        .await
        .unwrap();
    assert_eq!(after.handle.record().state, JobState::Succeeded);
    assert!(after.task.is_none());
    // No key, or another key: a new job.
    assert!(start(&jobs, "runner", None).await.id() != after.handle.id());
    assert_eq!(jobs.list().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_arriving_at_once_get_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(open(dir.path(), 2).0);
    let submits: Vec<_> = (0..16)
        .map(|_| {
            let jobs = jobs.clone();
            tokio::spawn(async move { jobs.submit(new_job("runner", Some("k"))).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for submit in submits {
        let submitted = submit.await.unwrap();
        ids.push(submitted.handle.id());
        tasks.extend(submitted.task);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(tasks.len(), 1);
    assert_eq!(jobs.list().len(), 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("jobs")).unwrap().count(),
        1
    );
}

#[tokio::test]
async fn a_restart_records_unfinished_jobs_interrupted_and_returns_their_images() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let done = start(&jobs, "done", None).await;
    let done_id = done.id();
    done.image_created("one", "img-done").await.unwrap();
    done.succeed("img-done").await.unwrap();
    let uploading = start(&jobs, "uploading", Some("retry-me")).await;
    let slot = uploading.acquire_slot().await.unwrap();
    uploading.image_created("one", "img-cut").await.unwrap();
    let queued = start(&jobs, "queued", None).await;
    let (uploading_id, queued_id) = (uploading.id(), queued.id());
    // kill -9: nothing runs on the way out.
    std::mem::forget((uploading, queued, slot));
    drop(jobs);

    let (jobs, recovery) = open(dir.path(), 2);
    let mut interrupted = recovery.interrupted.clone();
    interrupted.sort();
    let mut expected = vec![uploading_id, queued_id];
    expected.sort();
    assert_eq!(interrupted, expected);
    assert_eq!(
        recovery.images_to_delete,
        [CreatedImage {
            cloud: "one".into(),
            image_id: "img-cut".into(),
            kept: None,
        }]
    );
    assert_eq!(recovery.loaded, 3);
    for id in [uploading_id, queued_id] {
        let record = jobs.get(&id).unwrap();
        assert_eq!(record.state, JobState::Failed);
        let error = record.error.unwrap();
        assert_eq!(error.code, "interrupted");
        assert!(
            error.message.contains("daemon stopped"),
            "{}",
            error.message
        );
        assert_eq!(
            on_disk(dir.path(), &id)["record"]["error"]["code"],
            "interrupted"
        );
    }
    assert_eq!(jobs.get(&done_id).unwrap().state, JobState::Succeeded);
    // The key survived the restart: the retry gets the interrupted job, not a new upload.
    let retry = jobs
        .submit(new_job("uploading", Some("retry-me")))
        .await
        .unwrap();
    assert_eq!(retry.handle.id(), uploading_id);
    assert!(retry.task.is_none());
    assert!(jobs.submit(new_job("x", Some("retry-me"))).await.is_err());
    // A second restart finds nothing more to interrupt.
    drop(jobs);
    let (_, again) = open(dir.path(), 2);
    assert!(again.interrupted.is_empty() && again.images_to_delete.is_empty());
}

#[tokio::test]
async fn a_job_of_several_clouds_keeps_each_clouds_progress_and_succeeded_clouds_keep_their_image()
{
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let mut new = new_job("runner", None);
    new.clouds = vec!["a".into(), "b".into()];
    new.per_cloud = true;
    let task = jobs.submit(new).await.unwrap().task.unwrap();
    let _slot = task.acquire_slot().await.unwrap();
    task.cloud_bytes_sent("a").unwrap().add(1000);
    task.cloud_bytes_sent("b").unwrap().add(10);
    assert!(task.cloud_bytes_sent("c").is_none());
    task.image_created("a", "img-a").await.unwrap();
    task.image_created("b", "img-b").await.unwrap();
    assert!(task.image_created("c", "img-c").await.is_err());
    task.advance_cloud("a", JobState::Verifying).await.unwrap();
    assert!(task.advance_cloud("a", JobState::Uploading).await.is_err());
    task.succeed_cloud("a", "img-a").await.unwrap();
    let record = task.handle().record();
    let clouds = record.clouds.as_ref().unwrap();
    assert_eq!(clouds["a"].state, JobState::Succeeded);
    assert_eq!(clouds["a"].bytes_sent, 1000);
    assert_eq!(clouds["b"].bytes_sent, 10);
    assert_eq!(clouds["b"].image_id.as_deref(), Some("img-b"));
    assert_eq!(record.image_id, None);
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(json["clouds"]["a"]["image_id"], "img-a");
    std::mem::forget(task);
    drop(jobs);

    let (jobs, recovery) = open(dir.path(), 2);
    assert_eq!(
        recovery.images_to_delete,
        [CreatedImage {
            cloud: "b".into(),
            image_id: "img-b".into(),
            kept: None,
        }],
        "cloud a succeeded: its image stays"
    );
    let record = jobs.list().remove(0);
    let clouds = record.clouds.unwrap();
    assert_eq!(clouds["a"].state, JobState::Succeeded);
    assert_eq!(clouds["b"].state, JobState::Failed);
    assert_eq!(clouds["b"].error.as_ref().unwrap().code, "interrupted");
}

#[tokio::test]
async fn a_job_of_several_clouds_succeeds_only_when_every_cloud_did() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    for (b_fails, expected) in [(false, JobState::Succeeded), (true, JobState::Failed)] {
        let mut new = new_job("runner", None);
        new.clouds = vec!["a".into(), "b".into()];
        new.per_cloud = true;
        let task = jobs.submit(new).await.unwrap().task.unwrap();
        task.succeed_cloud("a", "img-a").await.unwrap();
        if b_fails {
            let failure = JobFailure::new("upload_image_failed", "Glance said 500");
            task.fail_cloud("b", failure).await.unwrap();
        } else {
            task.succeed_cloud("b", "img-b").await.unwrap();
        }
        let record = task.finish_from_clouds(None).await.unwrap();
        assert_eq!(record.state, expected);
        if b_fails {
            let error = record.error.unwrap();
            assert_eq!(error.code, "upload_image_failed");
            assert!(
                error.message.contains("cloud 'b': Glance said 500"),
                "{}",
                error.message
            );
            assert!(!error.message.contains("'a'"));
        }
    }
}

#[tokio::test]
async fn retention_forgets_old_jobs_their_records_and_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let old = start(&jobs, "runner", Some("k")).await;
    let old_id = old.id();
    let running = start(&jobs, "running", None).await;
    let ended_at = old.succeed("img").await.unwrap().updated_at;
    let retention = chrono::Duration::from_std(jobs.settings().job_retention).unwrap();

    let just_before = ended_at + retention - chrono::Duration::seconds(1);
    assert!(jobs.prune_expired(just_before).await.is_empty());
    assert!(jobs.get(&old_id).is_some());

    let after = ended_at + retention + chrono::Duration::seconds(1);
    assert_eq!(jobs.prune_expired(after).await, [old_id]);
    assert!(jobs.get(&old_id).is_none());
    assert!(!dir.path().join(format!("jobs/{old_id}.json")).exists());
    assert!(
        jobs.get(&running.id()).is_some(),
        "a running job is never forgotten"
    );
    // The key is free again: another request under it is a new job, not a conflict.
    let reused = jobs.submit(new_job("other", Some("k"))).await.unwrap();
    assert!(reused.task.is_some());
    assert_ne!(reused.handle.id(), old_id);
}

#[tokio::test]
async fn an_expired_key_is_free_even_before_the_pruner_runs_and_old_jobs_go_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let short = JobSettings {
        max_concurrent_uploads: 1,
        job_retention: Duration::from_millis(1),
        max_queued_uploads: 64,
    };
    let (jobs, _) = Jobs::<Upload>::open(dir.path(), short).unwrap();
    let first = jobs.submit(new_job("a", Some("k"))).await.unwrap();
    let first_id = first.handle.id();
    first.task.unwrap().succeed("img").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = jobs.submit(new_job("b", Some("k"))).await.unwrap();
    assert!(second.task.is_some(), "the expired job's key is free");
    assert!(jobs.get(&first_id).is_none());
    second.task.unwrap().succeed("img2").await.unwrap();
    drop(jobs);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (jobs, recovery) = Jobs::<Upload>::open(dir.path(), short).unwrap();
    assert_eq!((recovery.loaded, jobs.list().len()), (0, 0));
    assert_eq!(
        std::fs::read_dir(dir.path().join("jobs")).unwrap().count(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn at_most_max_concurrent_uploads_jobs_upload_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(open(dir.path(), 2).0);
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut runs = Vec::new();
    for i in 0..5 {
        let task = start(&jobs, &format!("app{i}"), None).await;
        let (now, most, jobs) = (now.clone(), most.clone(), jobs.clone());
        runs.push(tokio::spawn(async move {
            let slot = task.acquire_slot().await.unwrap();
            let uploading = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(uploading, Ordering::SeqCst);
            assert!(jobs.counts().get(JobState::Uploading) <= 2);
            tokio::time::sleep(Duration::from_secs(10)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            drop(slot);
            task.succeed("img").await.unwrap();
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = jobs.counts();
    assert_eq!(counts.get(JobState::Uploading), 2, "{counts:?}");
    assert_eq!(counts.get(JobState::Queued), 3, "{counts:?}");
    assert_eq!(counts.unfinished(), 5);
    for run in runs {
        run.await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
    assert_eq!(jobs.counts().get(JobState::Succeeded), 5);
    let json = serde_json::to_value(jobs.counts()).unwrap();
    assert_eq!(json["succeeded"], 5);
    assert_eq!(json["queued"], 0);
}

/// Lets a record write under way on a blocking thread land (the paused clock does
/// not wait for those threads).
async fn settle() {
    for _ in 0..5 {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(20));
    }
    tokio::task::yield_now().await;
}

#[tokio::test(start_paused = true)]
async fn progress_is_written_at_most_every_few_seconds_and_state_changes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = start(&jobs, "runner", None).await;
    let _slot = task.acquire_slot().await.unwrap();
    let store_writes = || jobs.ctx.store.writes();
    let before = store_writes();
    // 200 blocks over 20 s.
    for _ in 0..200 {
        task.bytes_sent().add(5);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settle().await;
    let progress_writes = store_writes() - before;
    let most = 20 / PROGRESS_PERSIST_INTERVAL.as_secs() + 1;
    assert!(
        (1..=most).contains(&progress_writes),
        "{progress_writes} writes for 200 blocks over 20 s"
    );
    let on_file = on_disk(dir.path(), &task.id())["record"]["bytes_sent"]
        .as_u64()
        .unwrap();
    assert!(on_file > 0 && on_file <= 1000, "{on_file}");
    // No progress, no write (once a write the loop's end overlapped has landed).
    settle().await;
    let idle = store_writes();
    tokio::time::sleep(PROGRESS_PERSIST_INTERVAL * 3).await;
    assert_eq!(store_writes(), idle);
    // A state change is written at once, with the newest count.
    task.advance(JobState::Verifying).await.unwrap();
    assert_eq!(store_writes(), idle + 1);
    assert_eq!(
        on_disk(dir.path(), &task.id())["record"]["bytes_sent"],
        1000
    );
}

#[tokio::test]
async fn a_task_dropped_before_the_end_fails_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = start(&jobs, "runner", None).await;
    let handle = task.handle();
    drop(task);
    let record = handle.wait_finished().await;
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.error.unwrap().code, "internal_error");
}

#[tokio::test]
async fn a_stop_refuses_new_jobs_fails_the_queued_and_hands_back_the_running_jobs_images() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = Arc::new(open(dir.path(), 1).0);
    let running = start(&jobs, "running", None).await;
    let _slot = running.acquire_slot().await.unwrap();
    running.image_created("one", "img-running").await.unwrap();
    let queued = start(&jobs, "queued", None).await;
    let queued_handle = queued.handle();
    let waiting = tokio::spawn(async move { queued.acquire_slot().await.map(drop) });
    tokio::task::yield_now().await;

    jobs.close();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, JobsError::ShuttingDown), "{err}");
    let record = queued_handle.record();
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.error.unwrap().code, "interrupted");
    let refused = jobs.submit(new_job("new", None)).await.unwrap_err();
    assert_eq!(refused.code(), "shutting_down");

    // The end of shutdown_grace.
    let running_handle = running.handle();
    let images = jobs
        .interrupt_unfinished("the daemon stopped (SIGTERM) before the job ended")
        .await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].image_id, "img-running");
    let record = running_handle.record();
    assert_eq!(record.error.unwrap().code, "interrupted");
    assert_eq!(
        on_disk(dir.path(), &running_handle.id())["record"]["state"],
        "failed"
    );
    // The task, stopped now, finds its job ended and changes nothing.
    assert!(running.advance(JobState::Verifying).await.is_err());
    let late = running.image_created("one", "img-late").await.unwrap_err();
    assert!(
        matches!(
            late,
            JobsError::Finished {
                state: JobState::Failed,
                ..
            }
        ),
        "{late}"
    );
    assert_eq!(
        running_handle.record().image_id.as_deref(),
        Some("img-running")
    );
    let refused = running.succeed("img-running").await.unwrap_err();
    assert!(
        matches!(refused, JobsError::IllegalTransition { .. }),
        "{refused}"
    );
    assert_eq!(running_handle.record().error.unwrap().code, "interrupted");
    assert_eq!(running_handle.state(), JobState::Failed);
}

#[tokio::test]
async fn jobs_are_listed_newest_first_and_found_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(start(&jobs, &format!("app{i}"), None).await.id());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let listed: Vec<JobId> = jobs.list().iter().map(|r| r.job).collect();
    ids.reverse();
    assert_eq!(listed, ids);
    assert_eq!(jobs.get(&ids[1]).unwrap().request, upload("app1"));
    assert!(jobs.get(&JobId::random()).is_none());
}

#[tokio::test]
async fn a_record_on_disk_holds_the_job_its_key_and_its_images_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = start(&jobs, "runner", Some("key-1")).await;
    task.image_created("one", "img").await.unwrap();
    let disk = on_disk(dir.path(), &task.id());
    let mut keys: Vec<_> = disk.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["format", "idempotency_key", "images", "record"]);
    assert_eq!(disk["idempotency_key"], "key-1");
    assert_eq!(
        disk["record"]["request"],
        serde_json::to_value(upload("runner")).unwrap()
    );
    // The API's record does not show the daemon's bookkeeping.
    let shown = serde_json::to_value(task.handle().record()).unwrap();
    assert!(shown.get("images").is_none() && shown.get("idempotency_key").is_none());
}

#[tokio::test]
async fn open_survives_a_corrupt_record_and_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 2);
    let task = start(&jobs, "runner", None).await;
    let id = task.id();
    task.succeed("img").await.unwrap();
    drop(jobs);
    let jobs_dir = dir.path().join("jobs");
    let bad = JobId::random();
    std::fs::write(jobs_dir.join(format!("{bad}.json")), b"\x00\x01 not json").unwrap();
    let text = std::fs::read(jobs_dir.join(format!("{id}.json"))).unwrap();
    std::fs::write(
        jobs_dir.join(format!(".{id}.0123456789abcdef.tmp")),
        &text[..10],
    )
    .unwrap();

    let (jobs, recovery) = open(dir.path(), 2);
    assert_eq!(recovery.moved_aside.len(), 1);
    assert!(recovery.moved_aside[0].starts_with(jobs_dir.join("unreadable")));
    assert_eq!(jobs.get(&id).unwrap().state, JobState::Succeeded);
    assert!(jobs.get(&bad).is_none());
    let left: Vec<_> = std::fs::read_dir(&jobs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "the record and unreadable/: {left:?}");
}

/// Lets spawned tasks run until none can go further.
async fn run_others() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn fewer_slots_are_taken_back_as_uploads_end_and_more_start_queued_ones_at_once() {
    let slots = slots::Slots::new(2);
    let a = slots.acquire().await.unwrap();
    let b = slots.acquire().await.unwrap();
    let waiter = {
        let slots = slots.clone();
        tokio::spawn(async move { slots.acquire().await })
    };
    // 2 -> 1 while both upload: neither is cut; the first to end pays the debt,
    // ahead of the job that was already waiting.
    slots.resize(1);
    drop(a);
    run_others().await;
    assert!(
        !waiter.is_finished(),
        "a queued job started above the new size"
    );
    assert_eq!(slots.available(), 0);
    drop(b);
    let c = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter gets the one slot")
        .unwrap()
        .unwrap();
    assert_eq!(slots.available(), 0);

    // 1 -> 3: two free slots at once; 3 -> 2: a free one is taken at once.
    slots.resize(3);
    assert_eq!(slots.available(), 2);
    slots.resize(2);
    assert_eq!(slots.available(), 1);

    // 2 -> 1 -> 2 with both busy: the growth repays the debt, nothing is added.
    let d = slots.acquire().await.unwrap();
    slots.resize(1);
    slots.resize(2);
    assert_eq!(slots.available(), 0);
    drop(c);
    drop(d);
    assert_eq!(slots.available(), 2);
    // 0 is taken as 1.
    slots.resize(0);
    assert_eq!(slots.available(), 1);
}

#[tokio::test]
async fn replaced_settings_start_a_queued_job_and_shorten_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, _) = open(dir.path(), 1);
    let first = start(&jobs, "first", Some("k1")).await;
    let second = start(&jobs, "second", None).await;
    let _uploading = first.acquire_slot().await.unwrap();
    let waiting = tokio::spawn(async move {
        let slot = second.acquire_slot().await;
        (second, slot)
    });
    run_others().await;
    assert_eq!(jobs.counts().get(JobState::Queued), 1);

    let wider = JobSettings {
        max_concurrent_uploads: 2,
        job_retention: Duration::from_secs(60),
        max_queued_uploads: 64,
    };
    jobs.replace_settings(wider);
    assert_eq!(jobs.settings(), wider);
    let (second, slot) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the queued job starts once there are 2 slots")
        .unwrap();
    slot.unwrap();
    assert_eq!(jobs.counts().get(JobState::Uploading), 2);

    // The new job_retention counts for a job that ended before the change.
    let ended_at = first.succeed("img").await.unwrap().updated_at;
    second.succeed("img2").await.unwrap();
    let in_two_minutes = ended_at + chrono::Duration::seconds(120);
    assert!(jobs.prune_expired(ended_at).await.is_empty());
    assert_eq!(jobs.prune_expired(in_two_minutes).await.len(), 2);
}
