//! Readable output for people; `--json` prints the server's JSON instead.
use modelyard_client::{
    Account, AccountStorage, AuditEvent, Blocker, Deployment, Error, Hardware, Model, Prediction,
    PruneResult, TrashItem, Version,
};
use serde::Serialize;
use serde_json::Value;

use crate::Failure;

pub fn json<T: Serialize + ?Sized>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: could not print the answer as JSON: {e}"),
    }
}

/// The first 12 characters of a version id, as people read them.
pub fn short(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

fn or_dash(s: &Option<String>) -> &str {
    s.as_deref().filter(|s| !s.is_empty()).unwrap_or("-")
}

/// A value as text: strings as they are, anything else as JSON.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
    }
}

fn indented(label: &str, text: &str) {
    if text.contains('\n') {
        println!("  {label}:");
        for l in text.lines() {
            println!("    {l}");
        }
    } else {
        println!("  {label}: {text}");
    }
}

pub fn account(a: &Account) {
    println!("{} ({})", a.username, a.kind);
    if !a.name.is_empty() && a.name != a.username {
        println!("  name: {}", a.name);
    }
}

pub fn hardware(hw: &[Hardware]) {
    for h in hw {
        println!("{:<16} {}", h.sku, h.name);
    }
}

pub fn model(m: &Model) {
    println!("{} ({})", m.full_name(), m.visibility);
    if let Some(d) = m.description.as_deref().filter(|d| !d.is_empty()) {
        indented("description", d);
    }
    if let Some(h) = &m.hardware {
        println!("  hardware: {h}");
    }
    match &m.latest_version {
        Some(v) => println!("  latest version: {} ({})", v.id, or_dash(&v.created_at)),
        None => println!("  latest version: none yet"),
    }
    println!("  runs: {}", m.run_count);
    for (label, url) in [
        ("github", &m.github_url),
        ("paper", &m.paper_url),
        ("license", &m.license_url),
        ("cover image", &m.cover_image_url),
    ] {
        if let Some(u) = url.as_deref().filter(|u| !u.is_empty()) {
            println!("  {label}: {u}");
        }
    }
    if !m.url.is_empty() {
        println!("  url: {}", m.url);
    }
    if let Some(c) = &m.created_at {
        println!("  created: {c}");
    }
}

pub fn model_line(m: &Model) {
    let latest = m.latest_version.as_ref().map_or("-", |v| short(&v.id));
    let desc = m
        .description
        .as_deref()
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("");
    println!(
        "{:<40} {:<8} {:<12}  {}",
        m.full_name(),
        m.visibility,
        latest,
        desc
    );
}

pub fn version(model: &str, v: &Version) {
    println!("{model}:{}", v.id);
    println!("  created: {}", or_dash(&v.created_at));
    println!("  cog version: {}", or_dash(&v.cog_version));
    let inputs = v
        .openapi_schema
        .as_ref()
        .and_then(|s| s.pointer("/components/schemas/Input/properties"))
        .and_then(Value::as_object);
    if let Some(props) = inputs {
        let list: Vec<String> = props
            .iter()
            .map(|(name, p)| match p.get("type").and_then(Value::as_str) {
                Some(t) => format!("{name} ({t})"),
                None => name.clone(),
            })
            .collect();
        println!(
            "  inputs: {}",
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            }
        );
    }
}

pub fn version_line(v: &Version) {
    println!(
        "{}  {}  cog {}",
        v.id,
        or_dash(&v.created_at),
        or_dash(&v.cog_version)
    );
}

/// A prediction or a training.
pub fn job(what: &str, p: &Prediction) {
    println!("{what} {} {}", p.id, p.status);
    let version = if p.version.is_empty() {
        "-".to_string()
    } else {
        p.version.clone()
    };
    println!("  version: {}:{}", p.model, version);
    if let Some(d) = &p.deployment {
        println!("  deployment: {d}");
    }
    println!("  created: {}", or_dash(&p.created_at));
    if p.started_at.is_some() {
        println!("  started: {}", or_dash(&p.started_at));
    }
    if p.completed_at.is_some() {
        println!("  completed: {}", or_dash(&p.completed_at));
    }
    if let Some(t) = p
        .metrics
        .as_ref()
        .and_then(|m| m.get("predict_time"))
        .and_then(Value::as_f64)
    {
        println!("  predict time: {t:.3}s");
    }
    if p.data_removed {
        println!("  (its input, output and logs have been removed)");
    } else if !p.input.is_null() {
        indented("input", &value_text(&p.input));
    }
    if !p.output.is_null() {
        indented("output", &value_text(&p.output));
    }
    if let Some(e) = p.error_text() {
        indented("error", &e);
    }
    if let Some(logs) = p.logs.as_deref().filter(|l| !l.trim().is_empty()) {
        println!("  logs:");
        for l in logs.trim_end().lines() {
            println!("    {l}");
        }
    }
    if let Some(web) = &p.urls.web {
        println!("  web: {web}");
    }
}

pub fn job_line(p: &Prediction) {
    println!(
        "{}  {:<10} {}:{}  {}",
        p.id,
        p.status,
        p.model,
        short(&p.version),
        or_dash(&p.created_at)
    );
}

pub fn deployment(d: &Deployment) {
    let r = &d.current_release;
    println!("{} (release {})", d.full_name(), r.number);
    println!("  version: {}:{}", r.model, r.version);
    println!("  hardware: {}", r.configuration.hardware);
    println!(
        "  instances: min {}, max {}{}",
        r.configuration.min_instances,
        r.configuration.max_instances,
        if r.configuration.max_instances == 0 {
            " (disabled)"
        } else {
            ""
        }
    );
    let by = &r.created_by.username;
    match (&r.created_at, by.is_empty()) {
        (Some(at), false) => println!("  released: {at} by {by}"),
        (Some(at), true) => println!("  released: {at}"),
        (None, false) => println!("  released by: {by}"),
        (None, true) => {}
    }
}

pub fn deployment_line(d: &Deployment) {
    let r = &d.current_release;
    println!(
        "{:<30} #{:<4} {}:{}  {}  {}..{}",
        d.full_name(),
        r.number,
        r.model,
        short(&r.version),
        r.configuration.hardware,
        r.configuration.min_instances,
        r.configuration.max_instances
    );
}

pub fn audit_event(e: &AuditEvent) {
    println!(
        "{}  {}  {} {}  {}",
        e.at, e.actor, e.action, e.target, e.outcome
    );
    for b in &e.blockers {
        println!("    - {b}");
    }
}

pub fn blockers(bs: &[Blocker], to_stderr: bool) {
    for b in bs {
        if to_stderr {
            eprintln!("- {b}");
        } else {
            println!("- {b}");
        }
    }
}

/// A size for people: "0 B", "512 B", "1.5 KiB", "3.0 GiB".
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n.abs() < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v.abs() < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// How long until `purge_at` (RFC 3339), in the two largest units: "6 days 23 hours",
/// "4 minutes", or "any moment now" once it is due. The time as given if it does not parse.
pub fn time_left(purge_at: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(purge_at) else {
        return format!("until {purge_at}");
    };
    let secs = (at.with_timezone(&chrono::Utc) - now).num_seconds();
    if secs <= 0 {
        return "any moment now".into();
    }
    let parts = [
        (secs / 86_400, "day"),
        (secs % 86_400 / 3600, "hour"),
        (secs % 3600 / 60, "minute"),
        (secs % 60, "second"),
    ];
    let plural = |(n, unit): (i64, &str)| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    let mut out = plural(parts[first]);
    if let Some(next) = parts.get(first + 1).filter(|(n, _)| *n > 0 && first < 3) {
        out = format!("{out} {}", plural(*next));
    }
    out
}

/// One line of the trash: what, how much purging it frees, how long it stays.
pub fn trash_line(t: &TrashItem, now: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{:<7}  {}  frees {}  purged in {}",
        t.kind,
        t.target(),
        bytes(t.frees_bytes),
        time_left(&t.purge_at, now)
    )
}

/// A prune's table: each version kept and why, each deleted one, and what it frees.
pub fn prune_lines(p: &PruneResult, dry_run: bool) -> Vec<String> {
    let mut out = Vec::new();
    for k in &p.kept {
        let why = match k.reason.as_str() {
            "newest" => "kept: one of the newest".to_string(),
            "blocked" => format!(
                "kept: {} blocker{}",
                k.blockers.len(),
                if k.blockers.len() == 1 { "" } else { "s" }
            ),
            other => format!("kept: {other}"),
        };
        out.push(format!("{}  {why}", short(&k.id)));
        out.extend(k.blockers.iter().map(|b| format!("    - {b}")));
    }
    let verb = if dry_run {
        "would be deleted"
    } else {
        "deleted"
    };
    out.extend(p.deleted.iter().map(|id| format!("{}  {verb}", short(id))));
    let n = p.deleted.len();
    out.push(format!(
        "{n} version{} {verb}, {} kept; {} {}.",
        if n == 1 { "" } else { "s" },
        p.kept.len(),
        if dry_run {
            "it would free"
        } else {
            "this frees"
        },
        bytes(p.frees_bytes)
    ));
    out
}

pub fn storage(s: &AccountStorage) {
    println!("Stored:        {}", bytes(s.bytes));
    println!("Only yours:    {}", bytes(s.unique_bytes));
    println!(
        "In the trash:  {} (freed when it is purged)",
        bytes(s.trash_bytes)
    );
}

/// Tells that there is more than was shown.
pub fn more_hint(next: &Option<String>) {
    if next.is_some() {
        eprintln!("(there are more: add --all to see every one)");
    }
}

pub fn print_failure(f: &Failure, has_token: bool) {
    match f {
        Failure::Message(m) => eprintln!("error: {}", sentence(m)),
        Failure::Client(Error::Api(e)) => {
            eprintln!("error: {e}");
            blockers(&e.blockers, true);
            for f in &e.invalid_fields {
                eprintln!("- {}: {}", f.field, f.description);
            }
            if e.status == 401 && !has_token {
                eprintln!(
                    "hint: set MODELYARD_TOKEN or pass --token (`modelyard admin token create ACCOUNT` makes one)"
                );
            }
        }
        Failure::Client(e @ Error::Http(_)) => {
            eprintln!("error: could not reach the server: {e}");
        }
        Failure::Client(e) => eprintln!("error: {}", sentence(&e.to_string())),
    }
}

/// Ends a message with a full stop, unless it already ends with punctuation.
pub fn sentence(m: &str) -> String {
    let m = m.trim_end();
    if m.ends_with(['.', '!', '?', ':']) {
        m.to_string()
    } else {
        format!("{m}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn time_left_in_two_units() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(time_left("2026-01-07T23:00:00Z", now), "6 days 23 hours");
        assert_eq!(time_left("2026-01-02T00:00:00Z", now), "1 day");
        assert_eq!(
            time_left("2026-01-01T00:04:05Z", now),
            "4 minutes 5 seconds"
        );
        assert_eq!(time_left("2026-01-01T00:00:01Z", now), "1 second");
        assert_eq!(time_left("2025-12-31T00:00:00Z", now), "any moment now");
        assert_eq!(time_left("soon", now), "until soon");
        let t = TrashItem {
            kind: "version".into(),
            owner: "a".into(),
            name: "m".into(),
            version_id: Some("v".into()),
            purge_at: "2026-01-01T02:00:00Z".into(),
            frees_bytes: 2048,
            ..Default::default()
        };
        assert_eq!(
            trash_line(&t, now),
            "version  a/m:v  frees 2.0 KiB  purged in 2 hours"
        );
    }

    #[test]
    fn prune_tables_say_why_each_stays() {
        let p: PruneResult = serde_json::from_value(serde_json::json!({
            "deleted": ["d".repeat(64)],
            "kept": [
                {"id": "n".repeat(64), "reason": "newest"},
                {"id": "b".repeat(64), "reason": "blocked",
                 "blockers": [{"kind": "public", "detail": "a/m is public."}]}
            ],
            "frees_bytes": 2048
        }))
        .unwrap();
        assert_eq!(
            prune_lines(&p, true),
            [
                "nnnnnnnnnnnn  kept: one of the newest",
                "bbbbbbbbbbbb  kept: 1 blocker",
                "    - public: a/m is public.",
                "dddddddddddd  would be deleted",
                "1 version would be deleted, 2 kept; it would free 2.0 KiB."
            ]
        );
        assert_eq!(
            prune_lines(&p, false).last().unwrap(),
            "1 version deleted, 2 kept; this frees 2.0 KiB."
        );
    }

    #[test]
    fn short_ids_and_sentences() {
        assert_eq!(short(&"a".repeat(64)), "aaaaaaaaaaaa");
        assert_eq!(short("abc"), "abc");
        assert_eq!(sentence("no user named bob"), "no user named bob.");
        assert_eq!(sentence("done."), "done.");
    }
}
