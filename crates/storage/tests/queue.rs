//! The job queue across many workers, on SQLite and PostgreSQL alike: each job taken once
//! however many workers contend, leases that expire and are renewed, what each worker may take
//! (hardware and GPU), deployments' `max_instances` across the cluster, the worker registry,
//! and the warm slots that keep deployments' `min_instances`.
#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::*;
use modelyard_domain::worker::{Offer, Worker};
use modelyard_domain::*;
use modelyard_storage::prelude::*;
use modelyard_storage::{JobEnd, JobLease, SqlStore};
use sqlx::Row;

conformance! {
    contending_workers_take_each_job_once => sqlite_contending_workers_take_each_job_once, postgres_contending_workers_take_each_job_once;
    a_passed_lease_fails_a_started_job_and_requeues_a_taken_one => sqlite_a_passed_lease_fails_a_started_job_and_requeues_a_taken_one, postgres_a_passed_lease_fails_a_started_job_and_requeues_a_taken_one;
    renewal_keeps_a_workers_jobs => sqlite_renewal_keeps_a_workers_jobs, postgres_renewal_keeps_a_workers_jobs;
    workers_take_only_the_hardware_and_gpu_they_offer => sqlite_workers_take_only_the_hardware_and_gpu_they_offer, postgres_workers_take_only_the_hardware_and_gpu_they_offer;
    a_waiting_job_is_noted_once => sqlite_a_waiting_job_is_noted_once, postgres_a_waiting_job_is_noted_once;
    max_instances_caps_a_deployment_across_workers => sqlite_max_instances_caps_a_deployment_across_workers, postgres_max_instances_caps_a_deployment_across_workers;
    workers_register_beat_and_are_forgotten => sqlite_workers_register_beat_and_are_forgotten, postgres_workers_register_beat_and_are_forgotten;
    warm_slots_keep_min_instances_across_workers => sqlite_warm_slots_keep_min_instances_across_workers, postgres_warm_slots_keep_min_instances_across_workers;
    contending_workers_share_warm_slots => sqlite_contending_workers_share_warm_slots, postgres_contending_workers_share_warm_slots;
}

fn every_kind() -> Offer {
    Offer::new(vec![], 1)
}

fn lease(worker: &str, until: DateTime<Utc>) -> JobLease {
    JobLease {
        worker_id: worker.into(),
        until,
    }
}

fn soon() -> DateTime<Utc> {
    Utc::now() + Duration::seconds(30)
}

/// Who holds a job, and until when (microseconds), as stored.
async fn holder(id: &str) -> (Option<String>, Option<i64>) {
    let pool = raw().await;
    let row = sqlx::query("SELECT worker_id, lease_until FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let out = (row.get("worker_id"), row.get("lease_until"));
    pool.close().await;
    out
}

async fn status(store: &SqlStore, id: &str) -> Job {
    store.job(JobKind::Prediction, id).await.unwrap().unwrap()
}

async fn queued_ids(store: &SqlStore, offer: &Offer) -> HashSet<String> {
    store
        .queued_jobs(offer, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect()
}

fn ended(status: Status) -> JobEnd {
    JobEnd {
        status,
        output: None,
        error: None,
        logs: String::new(),
        metrics: serde_json::json!({}),
        result_version_id: None,
        completed_at: Utc::now(),
    }
}

const JOBS: usize = 300;

async fn contending_workers_take_each_job_once(store: SqlStore) {
    let a = user(&store, "alice").await.account.id;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let store = Arc::new(store);
    let creators: Vec<_> = (0..JOBS)
        .map(|_| {
            let (store, v) = (store.clone(), v.id.clone());
            tokio::spawn(async move { predict(&store, a, &v).await.id })
        })
        .collect();
    let mut created = HashSet::new();
    for c in creators {
        created.insert(c.await.unwrap());
    }
    // Two workers of four dispatchers each read the same queue, then all try to take every
    // job at once (each from its own starting point): every job has eight contenders.
    const TAKERS: usize = 8;
    let read = Arc::new(tokio::sync::Barrier::new(TAKERS));
    let take = Arc::new(tokio::sync::Barrier::new(TAKERS));
    let takers: Vec<_> = (0..TAKERS)
        .map(|i| {
            let (store, read, take) = (store.clone(), read.clone(), take.clone());
            let worker = if i % 2 == 0 { "w1" } else { "w2" };
            tokio::spawn(async move {
                let offer = every_kind();
                read.wait().await;
                let mut queued = store.queued_jobs(&offer, 1000).await.unwrap();
                assert_eq!(queued.len(), JOBS);
                queued.rotate_left(i * JOBS / TAKERS);
                take.wait().await;
                let mut took = Vec::new();
                for j in queued {
                    if store
                        .claim_job(&j.id, &offer, &lease(worker, soon()))
                        .await
                        .unwrap()
                    {
                        took.push((j.id, worker));
                    }
                }
                took
            })
        })
        .collect();
    let mut taken = Vec::new();
    for t in takers {
        taken.extend(t.await.unwrap());
    }
    let ids: HashSet<&String> = taken.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), taken.len(), "a job was taken twice");
    assert_eq!(taken.len(), JOBS, "every job is taken");
    assert!(taken.iter().all(|(id, _)| created.contains(id)));
    let pool = raw().await;
    let stored: Vec<(String, Option<String>)> = sqlx::query("SELECT id, worker_id FROM jobs")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("id"), r.get("worker_id")))
        .collect();
    pool.close().await;
    assert_eq!(stored.len(), JOBS);
    for (id, worker) in &taken {
        let held = stored.iter().find(|(i, _)| i == id).unwrap();
        assert_eq!(held.1.as_deref(), Some(*worker), "{id}");
    }
    assert!(queued_ids(&store, &every_kind()).await.is_empty());
}

async fn a_passed_lease_fails_a_started_job_and_requeues_a_taken_one(store: SqlStore) {
    let a = user(&store, "alice").await.account.id;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let (started, taken, other) = (
        predict(&store, a, &v.id).await,
        predict(&store, a, &v.id).await,
        predict(&store, a, &v.id).await,
    );
    let offer = every_kind();
    let now = Utc::now();
    let until = now + Duration::seconds(1);
    assert!(store
        .claim_and_start_job(&started.id, &offer, &lease("w1", until), now)
        .await
        .unwrap());
    assert!(store
        .claim_job(&taken.id, &offer, &lease("w1", until))
        .await
        .unwrap());
    // Another worker's job, whose lease runs on.
    assert!(store
        .claim_job(&other.id, &offer, &lease("w2", now + Duration::hours(1)))
        .await
        .unwrap());
    assert_eq!(status(&store, &started.id).await.status, Status::Processing);

    // Before the lease passes nothing happens.
    let r = store.expire_leases(now, "lost").await.unwrap();
    assert_eq!((r.failed, r.requeued), (0, 0));

    let later = until + Duration::seconds(1);
    let r = store.expire_leases(later, "lost").await.unwrap();
    assert_eq!((r.failed, r.requeued), (1, 1));
    let s = status(&store, &started.id).await;
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.error.as_deref(), Some("lost"));
    assert!(s.completed_at.is_some());
    let t = status(&store, &taken.id).await;
    assert_eq!(t.status, Status::Starting);
    assert_eq!(holder(&taken.id).await, (None, None));
    assert_eq!(
        queued_ids(&store, &offer).await,
        HashSet::from([taken.id.clone()])
    );
    assert_eq!(status(&store, &other.id).await.status, Status::Starting);
    assert_eq!(holder(&other.id).await.0.as_deref(), Some("w2"));

    // Running it again changes nothing; the requeued job goes to the next worker.
    let r = store.expire_leases(later, "lost").await.unwrap();
    assert_eq!((r.failed, r.requeued), (0, 0));
    assert!(store
        .claim_job(&taken.id, &offer, &lease("w3", soon()))
        .await
        .unwrap());
    assert_eq!(holder(&taken.id).await.0.as_deref(), Some("w3"));
    // The worker that lost it comes back: it can neither start it nor give it back.
    assert!(!store.job_started(&taken.id, "w1", now).await.unwrap());
    store.release_job(&taken.id, "w1").await.unwrap();
    assert_eq!(holder(&taken.id).await.0.as_deref(), Some("w3"));
    assert!(store.job_started(&taken.id, "w3", now).await.unwrap());
    // The failed job stays failed: a late end from the lost worker does not overwrite it.
    assert!(!store
        .finish_job(&started.id, ended(Status::Succeeded))
        .await
        .unwrap());
}

async fn renewal_keeps_a_workers_jobs(store: SqlStore) {
    let a = user(&store, "alice").await.account.id;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let offer = every_kind();
    let now = Utc::now();
    let short = lease("w1", now + Duration::seconds(1));
    let mut mine = Vec::new();
    for _ in 0..3 {
        let j = predict(&store, a, &v.id).await;
        assert!(store.claim_job(&j.id, &offer, &short).await.unwrap());
        mine.push(j.id);
    }
    assert!(store.job_started(&mine[0], "w1", now).await.unwrap());
    // One of them ended: it is not renewed, nor failed later.
    assert!(store
        .finish_job(&mine[2], ended(Status::Succeeded))
        .await
        .unwrap());
    let theirs = predict(&store, a, &v.id).await;
    assert!(store
        .claim_job(&theirs.id, &offer, &lease("w2", now + Duration::seconds(1)))
        .await
        .unwrap());

    let renewed = store
        .renew_leases("w1", now + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(renewed, 2);
    let r = store
        .expire_leases(now + Duration::seconds(5), "lost")
        .await
        .unwrap();
    // Only the other worker's job, which nobody renewed, went back.
    assert_eq!((r.failed, r.requeued), (0, 1));
    assert_eq!(status(&store, &mine[0]).await.status, Status::Processing);
    assert_eq!(status(&store, &mine[1]).await.status, Status::Starting);
    assert_eq!(holder(&mine[1]).await.0.as_deref(), Some("w1"));
    assert_eq!(status(&store, &mine[2]).await.status, Status::Succeeded);
    assert_eq!(holder(&theirs.id).await.0, None);
}

/// Models on different hardware, a GPU version, and a deployment on hardware of its own.
struct Fleet {
    cpu_job: String,
    t4_gpu_job: String,
    t4_plain_job: String,
    a100_deployment_job: String,
}

async fn fleet(store: &SqlStore) -> Fleet {
    let a = user(store, "alice").await.account.id;
    let cpu = model(store, a, "cpu", Visibility::Public).await;
    let cpu_v = version(store, cpu.id, "d1", "a1").await;
    let t4 = store
        .create_model(NewModel {
            owner_id: a,
            name: "t4".into(),
            visibility: Some(Visibility::Public),
            hardware: "gpu-t4".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut gpu_v = new_version(t4.id, "d2", "a2");
    gpu_v.gpu = true;
    let gpu_v = store.create_version(gpu_v).await.unwrap().version;
    assert!(gpu_v.gpu);
    let plain_v = version(store, t4.id, "d3", "a3").await;
    assert!(!plain_v.gpu);
    let mut r = release(&cpu_v.id, 0, 5);
    r.hardware = "gpu-a100-large".into();
    let d = store.create_deployment(a, "big", r, "alice").await.unwrap();
    let mut j = new_job(JobKind::Prediction, a, &cpu_v.id);
    j.deployment_id = Some(d.id);
    Fleet {
        cpu_job: predict(store, a, &cpu_v.id).await.id,
        t4_gpu_job: predict(store, a, &gpu_v.id).await.id,
        t4_plain_job: predict(store, a, &plain_v.id).await.id,
        a100_deployment_job: store.create_job(j).await.unwrap().id,
    }
}

async fn workers_take_only_the_hardware_and_gpu_they_offer(store: SqlStore) {
    let f = fleet(&store).await;
    let set = |ids: &[&String]| ids.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    let offers = [
        (Offer::new(vec!["cpu".into()], 0), set(&[&f.cpu_job])),
        // GPUs, but it offers only cpu: they are not given.
        (Offer::new(vec!["cpu".into()], 4), set(&[&f.cpu_job])),
        (
            Offer::new(vec!["gpu-t4".into()], 1),
            set(&[&f.t4_gpu_job, &f.t4_plain_job]),
        ),
        // Named gpu-t4 but without a GPU: no `gpu` version.
        (
            Offer::new(vec!["gpu-t4".into()], 0),
            set(&[&f.t4_plain_job]),
        ),
        // A deployment's job needs the deployment's hardware, not its model's.
        (
            Offer::new(vec!["gpu-a100-large".into()], 8),
            set(&[&f.a100_deployment_job]),
        ),
        (
            Offer::new(vec![], 0),
            set(&[&f.cpu_job, &f.t4_plain_job, &f.a100_deployment_job]),
        ),
        (
            Offer::new(vec![], 2),
            set(&[
                &f.cpu_job,
                &f.t4_gpu_job,
                &f.t4_plain_job,
                &f.a100_deployment_job,
            ]),
        ),
    ];
    for (offer, expected) in &offers {
        assert_eq!(&queued_ids(&store, offer).await, expected, "{offer:?}");
    }
    // Taking checks the offer too: a worker cannot take what it was not offered.
    let cpu = Offer::new(vec!["cpu".into()], 0);
    for id in [&f.t4_gpu_job, &f.t4_plain_job, &f.a100_deployment_job] {
        assert!(!store
            .claim_job(id, &cpu, &lease("w1", soon()))
            .await
            .unwrap());
        assert!(!store
            .claim_and_start_job(id, &cpu, &lease("w1", soon()), Utc::now())
            .await
            .unwrap());
    }
    let no_gpu = Offer::new(vec!["gpu-t4".into()], 0);
    assert!(!store
        .claim_job(&f.t4_gpu_job, &no_gpu, &lease("w1", soon()))
        .await
        .unwrap());
    let t4 = Offer::new(vec!["gpu-t4".into()], 1);
    assert!(store
        .claim_job(&f.t4_gpu_job, &t4, &lease("w2", soon()))
        .await
        .unwrap());
    assert!(store
        .claim_job(&f.cpu_job, &cpu, &lease("w1", soon()))
        .await
        .unwrap());
}

async fn a_waiting_job_is_noted_once(store: SqlStore) {
    let f = fleet(&store).await;
    let needs = store.unnoted_needs(100).await.unwrap();
    let need = |id: &str| needs.iter().find(|n| n.job_id == id).unwrap().clone();
    assert_eq!(needs.len(), 4);
    assert_eq!(need(&f.cpu_job).hardware, "cpu");
    assert!(!need(&f.cpu_job).gpu);
    assert_eq!(need(&f.t4_gpu_job).hardware, "gpu-t4");
    assert!(need(&f.t4_gpu_job).gpu);
    assert_eq!(need(&f.a100_deployment_job).hardware, "gpu-a100-large");

    let line = need(&f.a100_deployment_job).waiting_line();
    assert!(line.contains("gpu-a100-large"), "{line}");
    assert!(store
        .note_waiting(&f.a100_deployment_job, &line)
        .await
        .unwrap());
    assert!(!store
        .note_waiting(&f.a100_deployment_job, &line)
        .await
        .unwrap());
    assert_eq!(status(&store, &f.a100_deployment_job).await.logs, line);
    let needs = store.unnoted_needs(100).await.unwrap();
    assert_eq!(needs.len(), 3);
    assert!(needs.iter().all(|n| n.job_id != f.a100_deployment_job));
    // A taken job is not noted: some worker took it after all.
    assert!(store
        .claim_job(&f.cpu_job, &every_kind(), &lease("w1", soon()))
        .await
        .unwrap());
    assert!(!store.note_waiting(&f.cpu_job, "nobody").await.unwrap());
    assert_eq!(status(&store, &f.cpu_job).await.logs, "");
}

async fn max_instances_caps_a_deployment_across_workers(store: SqlStore) {
    let a = user(&store, "alice").await.account.id;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let d = store
        .create_deployment(a, "prod", release(&v.id, 0, 2), "alice")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let mut j = new_job(JobKind::Prediction, a, &v.id);
        j.deployment_id = Some(d.id);
        ids.push(store.create_job(j).await.unwrap().id);
    }
    let store = Arc::new(store);
    let barrier = Arc::new(tokio::sync::Barrier::new(ids.len()));
    let contenders: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (store, id) = (store.clone(), id.clone());
            let worker = if i % 2 == 0 { "w1" } else { "w2" };
            contend(&barrier, async move {
                store
                    .claim_job(&id, &every_kind(), &lease(worker, soon()))
                    .await
                    .unwrap()
                    .then_some(id)
            })
        })
        .collect();
    let mut taken: Vec<String> = Vec::new();
    for c in contenders {
        taken.extend(c.await.unwrap());
    }
    assert_eq!(taken.len(), 2, "max_instances is 2 across both workers");
    // One ends: the next may be taken, and only one.
    assert!(store
        .finish_job(&taken[0], ended(Status::Succeeded))
        .await
        .unwrap());
    let rest: Vec<&String> = ids.iter().filter(|i| !taken.contains(i)).collect();
    assert!(store
        .claim_job(rest[0], &every_kind(), &lease("w1", soon()))
        .await
        .unwrap());
    assert!(!store
        .claim_job(rest[1], &every_kind(), &lease("w2", soon()))
        .await
        .unwrap());
}

fn worker(id: &str, hardware: &[&str], gpus: i64, at: DateTime<Utc>) -> Worker {
    Worker {
        id: id.into(),
        offer: Offer::new(
            hardware.iter().map(|h| h.to_string()).collect(),
            gpus as usize,
        ),
        gpus,
        max_servers: 2,
        servers: 0,
        started_at: at,
        heartbeat_at: at,
    }
}

async fn workers_register_beat_and_are_forgotten(store: SqlStore) {
    let now = Utc::now();
    let long_ago = now - Duration::minutes(10);
    store
        .register_worker(&worker("w1", &["gpu-t4", "cpu"], 1, now))
        .await
        .unwrap();
    store
        .register_worker(&worker("w2", &[], 0, long_ago))
        .await
        .unwrap();
    let live = store
        .live_workers(now - Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0],
        worker("w1", &["gpu-t4", "cpu"], 1, live[0].started_at)
    );
    assert!(live[0].offer.gpu);

    // A heartbeat brings w2 back to life and records its servers.
    assert!(store
        .heartbeat("w2", 3, now, now + Duration::seconds(30))
        .await
        .unwrap());
    let live = store
        .live_workers(now - Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(live.len(), 2);
    assert_eq!(live.iter().find(|w| w.id == "w2").unwrap().servers, 3);

    // w1 falls silent and is forgotten; its heartbeat then says so.
    assert!(store.heartbeat("w1", 0, long_ago, now).await.unwrap());
    assert_eq!(
        store
            .forget_stale_workers(now - Duration::minutes(1))
            .await
            .unwrap(),
        1
    );
    assert!(!store.heartbeat("w1", 0, now, now).await.unwrap());
    store.forget_worker("w2").await.unwrap();
    assert!(store.live_workers(long_ago).await.unwrap().is_empty());
}

async fn warm_slots_keep_min_instances_across_workers(store: SqlStore) {
    let a = user(&store, "alice").await.account.id;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    // `release` puts it on gpu-t4.
    let d = store
        .create_deployment(a, "prod", release(&v.id, 2, 4), "alice")
        .await
        .unwrap();
    let now = Utc::now();
    let until = now + Duration::seconds(30);
    let t4 = Offer::new(vec!["gpu-t4".into()], 1);
    let cpu = Offer::new(vec!["cpu".into()], 0);
    let slots =
        |s: &[modelyard_storage::WarmSlot]| -> Vec<i64> { s.iter().map(|s| s.slot).collect() };

    // A worker that does not offer the deployment's hardware holds nothing.
    assert!(store
        .hold_warm_slots("cpu", &cpu, 4, now, until)
        .await
        .unwrap()
        .is_empty());
    // One slot a round: a second worker gets its share.
    let w1 = store
        .hold_warm_slots("w1", &t4, 4, now, until)
        .await
        .unwrap();
    assert_eq!(slots(&w1), [0]);
    assert_eq!(w1[0].version_id, v.id);
    assert_eq!(w1[0].deployment_id, d.id);
    let w2 = store
        .hold_warm_slots("w2", &t4, 4, now, until)
        .await
        .unwrap();
    assert_eq!(slots(&w2), [1]);
    // Both slots held: min_instances is kept, nobody takes more.
    assert_eq!(
        slots(
            &store
                .hold_warm_slots("w1", &t4, 4, now, until)
                .await
                .unwrap()
        ),
        [0]
    );
    assert!(store
        .hold_warm_slots("w3", &t4, 4, now, until)
        .await
        .unwrap()
        .is_empty());

    // w2 stops answering: once its lease passes, w1 takes its slot too.
    let later = until + Duration::seconds(1);
    store
        .heartbeat("w1", 1, later, later + Duration::seconds(30))
        .await
        .unwrap();
    let w1 = store
        .hold_warm_slots("w1", &t4, 4, later, later + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(slots(&w1), [0, 1]);
    // A worker without room takes none.
    assert!(store
        .hold_warm_slots("w4", &t4, 0, later, later)
        .await
        .unwrap()
        .is_empty());

    // Fewer instances wanted: the slot past the minimum goes.
    let d2 = store
        .update_deployment(d.id, release(&v.id, 1, 4), "alice")
        .await
        .unwrap();
    assert_eq!(d2.release.min_instances, 1);
    let w1 = store
        .hold_warm_slots("w1", &t4, 4, later, later + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(slots(&w1), [0]);
    // Moved to hardware w1 does not offer: it lets go.
    let mut r = release(&v.id, 1, 4);
    r.hardware = "gpu-a100-large".into();
    store.update_deployment(d.id, r, "alice").await.unwrap();
    assert!(store
        .hold_warm_slots("w1", &t4, 4, later, later)
        .await
        .unwrap()
        .is_empty());
    let a100 = Offer::new(vec!["gpu-a100-large".into()], 1);
    assert_eq!(
        slots(
            &store
                .hold_warm_slots("w5", &a100, 4, later, later + Duration::seconds(30))
                .await
                .unwrap()
        ),
        [0]
    );
    // A worker that stops lets go of its slots at once.
    store.forget_worker("w5").await.unwrap();
    assert_eq!(
        slots(
            &store
                .hold_warm_slots("w6", &a100, 4, later, later + Duration::seconds(30))
                .await
                .unwrap()
        ),
        [0]
    );
}

async fn contending_workers_share_warm_slots(store: SqlStore) {
    let a = user(&store, "alice").await.account.id;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let mut deployments = Vec::new();
    for name in ["one", "two", "three"] {
        let d = store
            .create_deployment(a, name, release(&v.id, 2, 4), "alice")
            .await
            .unwrap();
        deployments.push(d.id);
    }
    // Four workers hold slots at once, round after round.
    let store = Arc::new(store);
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let offer = every_kind();
                let mut held = Vec::new();
                for _ in 0..5 {
                    barrier.wait().await;
                    let now = Utc::now();
                    held = store
                        .hold_warm_slots(&format!("w{i}"), &offer, 4, now, soon())
                        .await
                        .unwrap();
                }
                held
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    // Every deployment has exactly its min_instances, each slot held once.
    for d in deployments {
        let mut slots: Vec<i64> = all
            .iter()
            .filter(|s| s.deployment_id == d)
            .map(|s| s.slot)
            .collect();
        slots.sort();
        assert_eq!(slots, [0, 1], "deployment {d}: {all:?}");
    }
}
