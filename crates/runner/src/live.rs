//! The live side of jobs: each job's events, its end and its cancel, for whoever follows it on
//! this server (server-sent events, `Prefer: wait`, webhooks). Every server has one, whether it
//! runs jobs or not.
//!
//! A job run here feeds its channel directly, in this process. On a database that reaches other
//! servers (PostgreSQL) the hub also listens on the store's notice bus: events of jobs run
//! elsewhere feed the channels of their followers here, a cancel reaches the server running the
//! job, and a job recorded on a server without a runner wakes the others. A server tells its
//! own jobs' events on the bus only once it has heard another server on the database, so one
//! server alone, on either database, sends nothing there per job.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use modelyard_domain::{Job, JobKind, Status};
use modelyard_storage::{Notice, Store, StoreError, NOTICE_MAX};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};

use crate::Event;

/// Events of jobs, as `{"n": node, "job": id, "e": kind, ...}`.
const EVENTS: &str = "modelyard_events";
/// A job canceled: its id.
const CANCEL: &str = "modelyard_cancel";
/// A job was queued by a server that does not run jobs.
const WAKE: &str = "modelyard_wake";
/// A server joined (`{"n": node, "reply": false}`) or answers one that did.
const HELLO: &str = "modelyard_hello";

/// How often the channels of jobs run elsewhere are checked against their records, for an end
/// whose notice was lost (its server died, say).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The live side of one job: its events, its end, and a way to cancel it.
pub struct JobChannel {
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) done: watch::Sender<bool>,
    pub(crate) cancel: watch::Sender<bool>,
    pub(crate) seen: Mutex<Seen>,
    pub(crate) result: Mutex<Option<oneshot::Sender<Value>>>,
    /// The finished job as recorded, for a request waiting on it.
    pub(crate) final_job: Mutex<Option<Job>>,
    /// Whether the job asked for webhooks: only then do its events go to `follow_all`, whose
    /// follower would otherwise read every job's record to find it has none.
    pub(crate) webhook: AtomicBool,
    /// Whether this server's runner runs the job: then its events come from here, never from
    /// the bus.
    pub(crate) run_here: AtomicBool,
    made: Instant,
}

impl JobChannel {
    fn new() -> JobChannel {
        JobChannel {
            events: broadcast::channel(256).0,
            done: watch::channel(false).0,
            cancel: watch::channel(false).0,
            seen: Default::default(),
            result: Mutex::new(None),
            final_job: Mutex::new(None),
            webhook: Default::default(),
            run_here: Default::default(),
            made: Instant::now(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) logs: usize,
    pub(crate) outputs: usize,
    pub(crate) ended: bool,
    /// The longest logs seen, for an end that reports fewer.
    pub(crate) logs_text: String,
    /// When progress was last written to the record: at most every half second, so a short
    /// prediction costs no write until it ends.
    pub(crate) written: Option<Instant>,
    /// What the job's logs say before the model's own: the environment build, when this job
    /// waited for one. Cog's logs count from their own start, after it.
    pub(crate) prefix: String,
    /// The output items sent so far, for a follower that comes late (the record is written at
    /// most every half second).
    pub(crate) items: Vec<Value>,
    /// A job run elsewhere: whether `logs` was set by the first logs heard (followers see the
    /// logs from when they came, as on one server).
    logs_known: bool,
    /// A job run elsewhere: an event was missed (heard out of order, lost, or too large for the
    /// bus), so what followers lack is read from the record.
    behind: bool,
    /// A job run elsewhere: its whole (not iterated) output was passed on.
    whole: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What this server says on the bus, in the order it is said.
enum Say {
    Event(String, Event),
    Cancel(String),
    Wake,
    Hello { reply: bool },
}

/// The live side of every job this server follows.
pub struct Live {
    store: Arc<dyn Store>,
    /// Names this server on the bus, so it ignores its own notices.
    node: String,
    channels: Mutex<HashMap<String, Arc<JobChannel>>>,
    /// Every job's events that ran here and asked for webhooks, for the webhook sender.
    all: broadcast::Sender<(String, Event)>,
    /// Whether another server was heard on the bus: then jobs run here are told there.
    peers: AtomicBool,
    /// To the task that sends this server's notices, one after another; none on SQLite.
    say: Option<mpsc::UnboundedSender<Say>>,
    /// Rung when another server queued a job (or one was canceled here): the runner's
    /// dispatcher looks at the queue.
    pub(crate) woken: Notify,
}

impl Live {
    /// The hub, listening on the bus when the store reaches other servers. Must be called
    /// within the async runtime.
    pub fn new(store: Arc<dyn Store>) -> Arc<Live> {
        let across = store.notifies_other_processes();
        let (say, said) = mpsc::unbounded_channel();
        let live = Arc::new(Live {
            store,
            node: format!("{:016x}", rand::random::<u64>()),
            channels: Default::default(),
            all: broadcast::channel(4096).0,
            peers: AtomicBool::new(false),
            say: across.then_some(say),
            woken: Notify::new(),
        });
        if across {
            tokio::spawn(speak(Arc::downgrade(&live), said));
            tokio::spawn(listen(Arc::downgrade(&live)));
        }
        live
    }

    /// Whether another server on the database was heard (it follows this server's jobs).
    pub fn has_peers(&self) -> bool {
        self.peers.load(Ordering::Relaxed)
    }

    /// Follows a job's events from now on, with the output items it already sent: together
    /// they miss nothing and repeat nothing.
    pub fn follow(&self, id: &str) -> (broadcast::Receiver<Event>, Vec<Value>) {
        let ch = self.channel(id);
        // Events are sent under this lock: none can slip between the copy and the subscription.
        let seen = lock(&ch.seen);
        (ch.events.subscribe(), seen.items.clone())
    }

    /// The events of every job run here that asked for webhooks, as they happen: (job id,
    /// event). A slow follower may lag and miss some; the job's record stays the truth.
    pub fn follow_all(&self) -> broadcast::Receiver<(String, Event)> {
        self.all.subscribe()
    }

    /// Waits until the job ends or `limit` passes. Returns the ended job when it is known here;
    /// otherwise the caller reads the record.
    pub async fn wait(&self, kind: JobKind, id: &str, limit: Duration) -> Option<Job> {
        let (ch, existed) = self.channel_and_whether_it_existed(id);
        let mut done = ch.done.subscribe();
        // A channel says so when its job ends and only then goes. So a channel that was there
        // (a job this server queued makes it then) cannot have missed the end. Otherwise the
        // job may have ended before, or runs elsewhere: subscribed first, then the record.
        if !existed {
            match self.store.job(kind, id).await {
                Ok(Some(j)) if j.status.is_terminal() => {
                    self.forget_if_idle(id, &ch);
                    return Some(j);
                }
                Ok(None) => {
                    self.forget_if_idle(id, &ch);
                    return None;
                }
                _ => {}
            }
        }
        let ended = async {
            loop {
                if *done.borrow_and_update() {
                    return;
                }
                if done.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, ended).await;
        let done = lock(&ch.final_job).clone();
        done
    }

    /// The job was canceled in storage; stop it wherever it runs.
    pub fn cancel(&self, id: &str) {
        let ch = lock(&self.channels).get(id).cloned();
        let here = ch
            .as_ref()
            .is_some_and(|c| c.run_here.load(Ordering::Relaxed));
        if let Some(ch) = ch {
            // Kept even before it runs: the run looks at it first.
            let _ = ch.cancel.send(true);
        }
        if !here {
            self.tell(Say::Cancel(id.to_string()));
        }
        self.woken.notify_one();
    }

    /// A job was queued by this server, which does not run jobs: the others look at the queue
    /// now rather than at their next poll.
    pub fn wake_runners(&self) {
        self.tell(Say::Wake);
    }

    /// A job queued here, whose run this server will probably take: a request that waits on
    /// it needs no read of the record.
    pub(crate) fn queued(&self, id: &str) {
        self.channel(id);
    }

    /// The channel of a job this server's runner runs.
    pub(crate) fn run_here(&self, id: &str) -> Arc<JobChannel> {
        let ch = self.channel(id);
        ch.run_here.store(true, Ordering::Relaxed);
        ch
    }

    pub(crate) fn existing(&self, id: &str) -> Option<Arc<JobChannel>> {
        lock(&self.channels).get(id).cloned()
    }

    fn channel(&self, id: &str) -> Arc<JobChannel> {
        self.channel_and_whether_it_existed(id).0
    }

    fn channel_and_whether_it_existed(&self, id: &str) -> (Arc<JobChannel>, bool) {
        let mut map = lock(&self.channels);
        if let Some(ch) = map.get(id) {
            return (ch.clone(), true);
        }
        let ch = Arc::new(JobChannel::new());
        map.insert(id.to_string(), ch.clone());
        (ch, false)
    }

    /// An event of a job run here, to its followers here (and to other servers, when there are).
    pub(crate) fn emit(&self, ch: &JobChannel, id: &str, e: Event) {
        if self.peers.load(Ordering::Relaxed) {
            self.tell(Say::Event(id.to_string(), e.clone()));
        }
        if ch.webhook.load(Ordering::Relaxed) {
            let _ = self.all.send((id.to_string(), e.clone()));
        }
        let _ = ch.events.send(e);
    }

    /// Drops a channel made only to wait on a job that had already ended.
    pub(crate) fn forget_if_idle(&self, id: &str, ch: &Arc<JobChannel>) {
        let mut map = lock(&self.channels);
        // Ours and the map's: nobody else follows it.
        if map.get(id).is_some_and(|c| Arc::ptr_eq(c, ch)) && Arc::strong_count(ch) <= 2 {
            map.remove(id);
        }
    }

    pub(crate) fn forget(&self, id: &str) {
        lock(&self.channels).remove(id);
    }

    fn tell(&self, say: Say) {
        if let Some(tx) = &self.say {
            let _ = tx.send(say);
        }
    }

    /// Channels of jobs run elsewhere.
    fn elsewhere(&self) -> Vec<(String, Arc<JobChannel>)> {
        lock(&self.channels)
            .iter()
            .filter(|(_, c)| !c.run_here.load(Ordering::Relaxed))
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect()
    }

    /// An event heard from the server running the job, passed on to the followers here once,
    /// in order. False when something before it was missed.
    fn pass_on(ch: &JobChannel, e: Event) -> bool {
        let mut seen = lock(&ch.seen);
        if seen.behind {
            return false;
        }
        match e {
            Event::Started => {
                let _ = ch.events.send(Event::Started);
            }
            Event::Output {
                index: Some(i),
                value,
            } => {
                if i > seen.outputs {
                    seen.behind = true;
                } else if i == seen.outputs {
                    seen.items.push(value.clone());
                    seen.outputs += 1;
                    let _ = ch.events.send(Event::Output {
                        index: Some(i),
                        value,
                    });
                }
            }
            Event::Output { index: None, value } => {
                seen.whole = true;
                let _ = ch.events.send(Event::Output { index: None, value });
            }
            Event::Logs { offset, text } => {
                if !seen.logs_known {
                    seen.logs_known = true;
                    seen.logs = offset;
                }
                let at = seen.logs;
                if offset > at {
                    seen.behind = true;
                } else if offset + text.len() > at && text.is_char_boundary(at - offset) {
                    seen.logs = offset + text.len();
                    let _ = ch.events.send(Event::Logs {
                        offset: at,
                        text: text[at - offset..].to_string(),
                    });
                }
            }
            Event::Done(_) => {}
        }
        !seen.behind
    }

    /// Brings the followers of a job run elsewhere up to its record: what they missed, and its
    /// end when it has ended.
    async fn catch_up(&self, id: &str, heard_end: Option<Status>) {
        let mut job = None;
        for kind in [JobKind::Prediction, JobKind::Training] {
            if let Ok(Some(j)) = self.store.job(kind, id).await {
                job = Some(j);
                break;
            }
        }
        let Some(ch) = self.existing(id) else { return };
        if ch.run_here.load(Ordering::Relaxed) {
            return;
        }
        let status = {
            let mut seen = lock(&ch.seen);
            // The runner here may have taken the job meanwhile: its events are its own.
            if ch.run_here.load(Ordering::Relaxed) {
                return;
            }
            if let Some(j) = &job {
                if let Some(Value::Array(items)) = &j.output {
                    for (i, item) in items.iter().enumerate().skip(seen.outputs) {
                        seen.items.push(item.clone());
                        let _ = ch.events.send(Event::Output {
                            index: Some(i),
                            value: item.clone(),
                        });
                    }
                    seen.outputs = seen.outputs.max(items.len());
                }
                if !seen.logs_known {
                    seen.logs_known = true;
                    seen.logs = j.logs.len();
                } else if j.logs.len() > seen.logs && j.logs.is_char_boundary(seen.logs) {
                    let _ = ch.events.send(Event::Logs {
                        offset: seen.logs,
                        text: j.logs[seen.logs..].to_string(),
                    });
                    seen.logs = j.logs.len();
                }
                seen.behind = false;
            }
            match (&job, heard_end) {
                (Some(j), _) if j.status.is_terminal() => {
                    if let Some(v) = j.output.as_ref().filter(|v| !v.is_array()) {
                        if !seen.whole {
                            let _ = ch.events.send(Event::Output {
                                index: None,
                                value: v.clone(),
                            });
                        }
                    }
                    Some(j.status)
                }
                (None, _) => Some(heard_end.unwrap_or(Status::Failed)),
                (Some(_), s) => s,
            }
        };
        if let Some(status) = status {
            *lock(&ch.final_job) = job.filter(|j| j.status.is_terminal());
            let _ = ch.events.send(Event::Done(status));
            ch.done.send_replace(true);
            let mut map = lock(&self.channels);
            if map.get(id).is_some_and(|c| Arc::ptr_eq(c, &ch)) {
                map.remove(id);
            }
        }
    }

    /// What another server said.
    async fn heard(&self, topic: &str, payload: &str) {
        match topic {
            EVENTS => {
                let Ok(v) = serde_json::from_str::<Value>(payload) else {
                    return;
                };
                let (Some(node), Some(id)) = (v["n"].as_str(), v["job"].as_str()) else {
                    return;
                };
                if node == self.node {
                    return;
                }
                let Some(ch) = self.existing(id) else { return };
                if ch.run_here.load(Ordering::Relaxed) {
                    return;
                }
                match from_wire(&v) {
                    Some(Event::Done(s)) => self.catch_up(id, Some(s)).await,
                    Some(e) => {
                        if !Live::pass_on(&ch, e) {
                            self.catch_up(id, None).await;
                        }
                    }
                    // Too large for the bus: the record has it (or soon will).
                    None => self.catch_up(id, None).await,
                }
            }
            CANCEL => {
                if let Some(ch) = self.existing(payload) {
                    let _ = ch.cancel.send(true);
                }
            }
            WAKE => self.woken.notify_one(),
            HELLO => {
                let Ok(v) = serde_json::from_str::<Value>(payload) else {
                    return;
                };
                if v["n"].as_str().is_some_and(|n| n != self.node) {
                    self.peers.store(true, Ordering::Relaxed);
                    if v["reply"] != json!(true) {
                        self.tell(Say::Hello { reply: true });
                    }
                }
            }
            _ => {}
        }
    }

    /// Notices may have been lost: every follower here catches up with its job's record, and
    /// this server says hello again (a server that came meanwhile may not have heard it).
    async fn missed(&self) {
        self.tell(Say::Hello { reply: false });
        for (id, _) in self.elsewhere() {
            self.catch_up(&id, None).await;
        }
    }

    /// Channels of jobs run elsewhere that nobody follows any more go; the others catch up
    /// with their records, in case an end was never told.
    async fn check(&self) {
        // Alone on the database, every job runs here and tells its end here.
        if !self.has_peers() {
            return;
        }
        for (id, ch) in self.elsewhere() {
            if ch.made.elapsed() < CHECK_EVERY {
                continue;
            }
            if ch.events.receiver_count() == 0 && ch.done.receiver_count() == 0 {
                let mut map = lock(&self.channels);
                if map.get(&id).is_some_and(|c| Arc::ptr_eq(c, &ch)) {
                    map.remove(&id);
                }
            } else {
                self.catch_up(&id, None).await;
            }
        }
    }
}

/// An event as told on the bus; `None` when it would not fit, for the listeners to read the
/// record instead.
fn to_wire(node: &str, id: &str, e: &Event) -> String {
    let v = match e {
        Event::Started => json!({"n": node, "job": id, "e": "started"}),
        Event::Output { index, value } => {
            json!({"n": node, "job": id, "e": "output", "i": index, "v": value})
        }
        Event::Logs { offset, text } => {
            json!({"n": node, "job": id, "e": "logs", "o": offset, "t": text})
        }
        Event::Done(s) => json!({"n": node, "job": id, "e": "done", "s": s.as_str()}),
    };
    let text = v.to_string();
    if text.len() <= NOTICE_MAX {
        return text;
    }
    json!({"n": node, "job": id, "e": "reread"}).to_string()
}

fn from_wire(v: &Value) -> Option<Event> {
    Some(match v["e"].as_str()? {
        "started" => Event::Started,
        "output" => Event::Output {
            index: v["i"].as_u64().map(|i| i as usize),
            value: v["v"].clone(),
        },
        "logs" => Event::Logs {
            offset: v["o"].as_u64()? as usize,
            text: v["t"].as_str()?.to_string(),
        },
        "done" => Event::Done(Status::parse(v["s"].as_str()?)?),
        _ => return None,
    })
}

/// Says what this server has to say, one notice after another, so they arrive in order.
async fn speak(live: Weak<Live>, mut said: mpsc::UnboundedReceiver<Say>) {
    while let Some(say) = said.recv().await {
        let Some(live) = live.upgrade() else { return };
        let (topic, payload) = match say {
            Say::Event(id, e) => (EVENTS, to_wire(&live.node, &id, &e)),
            Say::Cancel(id) => (CANCEL, id),
            Say::Wake => (WAKE, String::new()),
            Say::Hello { reply } => (HELLO, json!({"n": live.node, "reply": reply}).to_string()),
        };
        if let Err(e) = live.store.notify(topic, &payload).await {
            match e {
                StoreError::TooLarge(_) => {}
                e => tracing::warn!(error = %e, topic, "could not tell the other servers"),
            }
        }
    }
}

/// Hears the other servers until this hub is gone.
async fn listen(live: Weak<Live>) {
    let mut listener = loop {
        let Some(l) = live.upgrade() else { return };
        match l.store.listen(&[EVENTS, CANCEL, WAKE, HELLO]).await {
            Ok(listener) => {
                l.tell(Say::Hello { reply: false });
                break listener;
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen to the other servers; retrying"),
        }
        drop(l);
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        let notice = tokio::select! {
            n = listener.recv() => n,
            _ = check.tick() => {
                let Some(l) = live.upgrade() else { return };
                l.check().await;
                continue;
            }
        };
        let Some(l) = live.upgrade() else { return };
        match notice {
            Some(Notice::Message { topic, payload }) => l.heard(&topic, &payload).await,
            Some(Notice::Missed) => l.missed().await,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: usize, v: &str) -> Event {
        Event::Output {
            index: Some(i),
            value: json!(v),
        }
    }

    fn logs(offset: usize, text: &str) -> Event {
        Event::Logs {
            offset,
            text: text.into(),
        }
    }

    fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(match e {
                Event::Output { index, value } => format!("{index:?}={value}"),
                Event::Logs { offset, text } => format!("@{offset}:{text}"),
                other => format!("{other:?}"),
            });
        }
        out
    }

    #[test]
    fn heard_events_pass_on_once_and_in_order() {
        let ch = JobChannel::new();
        let mut rx = ch.events.subscribe();
        assert!(Live::pass_on(&ch, item(0, "a")));
        assert!(Live::pass_on(&ch, item(0, "a")), "a repeat is no gap");
        assert!(Live::pass_on(&ch, item(1, "b")));
        // The first logs heard set where followers start; overlaps are trimmed.
        assert!(Live::pass_on(&ch, logs(10, "hello ")));
        assert!(Live::pass_on(&ch, logs(13, "lo world")));
        assert_eq!(
            drain(&mut rx),
            ["Some(0)=\"a\"", "Some(1)=\"b\"", "@10:hello ", "@16:world"]
        );
        assert_eq!(lock(&ch.seen).items, [json!("a"), json!("b")]);
    }

    #[test]
    fn a_gap_stops_passing_on_until_the_record_is_read() {
        let ch = JobChannel::new();
        let mut rx = ch.events.subscribe();
        assert!(Live::pass_on(&ch, item(0, "a")));
        assert!(!Live::pass_on(&ch, item(2, "c")), "item 1 was missed");
        assert!(!Live::pass_on(&ch, item(1, "b")), "behind until caught up");
        assert_eq!(drain(&mut rx), ["Some(0)=\"a\""]);
        let ch = JobChannel::new();
        assert!(Live::pass_on(&ch, logs(0, "ab")));
        assert!(!Live::pass_on(&ch, logs(5, "x")), "logs 2..5 were missed");
    }

    #[test]
    fn events_too_large_for_a_notice_say_read_the_record() {
        let small = to_wire("n1", "job1", &item(3, "word"));
        let v: Value = serde_json::from_str(&small).unwrap();
        assert!(
            matches!(from_wire(&v), Some(Event::Output { index: Some(3), value }) if value == "word")
        );
        let big = to_wire("n1", "job1", &item(3, &"x".repeat(NOTICE_MAX)));
        assert!(big.len() <= NOTICE_MAX);
        let v: Value = serde_json::from_str(&big).unwrap();
        assert_eq!(
            (v["job"].as_str(), v["e"].as_str()),
            (Some("job1"), Some("reread"))
        );
        assert!(from_wire(&v).is_none());
        let done = to_wire("n1", "job1", &Event::Done(Status::Canceled));
        let v: Value = serde_json::from_str(&done).unwrap();
        assert!(matches!(from_wire(&v), Some(Event::Done(Status::Canceled))));
    }
}
