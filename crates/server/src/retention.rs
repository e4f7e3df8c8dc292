//! Retention of what every prediction leaves behind beside its record: output files and the
//! capability links (`urls.stream`, `/files/...`). The runner removes API predictions' data
//! after `--api-retention-secs`; the same time bounds the links and files of every job, web
//! predictions and trainings included, so no capability URL lives forever.
use std::time::Duration;

use chrono::Utc;
use modelyard_domain::{Job, JobKind};
use modelyard_storage::StoreError;

use crate::state::AppState;

/// Whether a finished job's retention time has passed since it ended (or its data is already
/// gone). Counted from the end, so a long job's links still work for the whole time after it.
pub fn job_expired(s: &AppState, job: &Job) -> bool {
    let keep = chrono::Duration::from_std(s.config.api_retention).unwrap_or(chrono::Duration::MAX);
    let ended = job.completed_at.unwrap_or(job.created_at);
    job.data_removed
        || (job.status.is_terminal()
            && ended
                .checked_add_signed(keep)
                .is_some_and(|until| until < Utc::now()))
}

/// Whether the links of the job `id` (a prediction or a training) have expired; a job that does
/// not exist has none.
pub async fn expired(s: &AppState, id: &str) -> Result<bool, StoreError> {
    for kind in [JobKind::Prediction, JobKind::Training] {
        if let Some(job) = s.store.job(kind, id).await? {
            return Ok(job_expired(s, &job));
        }
    }
    Ok(true)
}

/// Removes output files whose job has expired (or is gone), every minute.
pub fn start(s: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            sweep(&s).await;
        }
    });
}

pub async fn sweep(s: &AppState) {
    let jobs = match s.blobs.output_jobs().await {
        Ok(jobs) => jobs,
        Err(err) => {
            tracing::warn!(error = %err, "could not list output files");
            return;
        }
    };
    for id in jobs {
        match expired(s, &id).await {
            Ok(true) => {
                if let Err(err) = s.blobs.remove_outputs(&id).await {
                    tracing::warn!(error = %err, job = %id, "could not remove expired output files");
                }
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(error = ?err, "could not check output retention"),
        }
    }
}
