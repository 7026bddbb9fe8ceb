//! A job that a stop or a crash cut off: what it ends as. A cloud whose image
//! was verified and recorded kept succeeds with its kept answer (never deleted);
//! everything else fails `interrupted` (and its images are deleted).

use std::collections::BTreeMap;

use super::job::{JobData, JobShared};
use super::model::{JobFailure, JobRequest, JobState};
use super::JobsError;

impl<R: JobRequest> JobShared<R> {
    /// Ends a job that a stop or a crash cut off (not yet written: call
    /// [`JobShared::persist`] after). A cloud whose image was kept succeeds with
    /// its kept answer; every other cloud, and a job with nothing kept, fails
    /// `interrupted`. A job of several clouds succeeds only when every cloud did;
    /// its outcome is `{"results": {cloud: answer, or {"error"}}}`. `None` when
    /// the job had already ended.
    pub(crate) fn interrupt(&self, message: &str) -> Option<()> {
        let failure = JobFailure::interrupted(message);
        self.update(|data| {
            if data.record.state.is_terminal() {
                return Err(JobsError::Finished {
                    job: self.id,
                    state: data.record.state,
                });
            }
            end_interrupted(data, failure);
            Ok(())
        })
        .ok()
    }
}

/// What [`JobShared::interrupt`] records: see there.
fn end_interrupted<R>(data: &mut JobData<R>, failure: JobFailure) {
    let kept: BTreeMap<String, (String, serde_json::Value)> = data
        .images
        .iter()
        .filter_map(|i| Some((i.cloud.clone(), (i.image_id.clone(), i.kept.clone()?))))
        .collect();
    let record = &mut data.record;
    let Some(clouds) = record.clouds.as_mut() else {
        match kept.into_values().next() {
            Some((image_id, answer)) => {
                record.state = JobState::Succeeded;
                record.image_id = Some(image_id);
                data.outcome = Some(answer);
            }
            None => {
                record.state = JobState::Failed;
                record.error = Some(failure);
            }
        }
        return;
    };
    let mut results = serde_json::Map::new();
    for (name, cloud) in clouds.iter_mut() {
        if let Some((image_id, answer)) = kept.get(name) {
            if !cloud.state.is_terminal() {
                cloud.state = JobState::Succeeded;
                cloud.image_id = Some(image_id.clone());
            }
            if cloud.state == JobState::Succeeded {
                results.insert(name.clone(), answer.clone());
                continue;
            }
        }
        if !cloud.state.is_terminal() {
            cloud.state = JobState::Failed;
            cloud.error = Some(failure.clone());
        }
        if let Some(error) = &cloud.error {
            let error =
                serde_json::json!({"error": {"code": error.code, "message": error.message}});
            results.insert(name.clone(), error);
        }
    }
    let all_succeeded = clouds.values().all(|c| c.state == JobState::Succeeded);
    record.state = if all_succeeded {
        JobState::Succeeded
    } else {
        record.error = Some(failure);
        JobState::Failed
    };
    data.outcome = Some(serde_json::json!({ "results": results }));
}
