//! `modelyard push`: the project is packed while it is sent, with progress on standard error (a
//! bar on a terminal, a line every few seconds otherwise), and a broken connection is retried.
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use modelyard_client::{Client, Error, Version};

use crate::Failure;

/// Attempts after the first, when the connection fails (not when the server refuses).
const RETRIES: u32 = 3;

pub async fn push(
    c: &Client,
    owner: &str,
    name: &str,
    dir: &Path,
    quiet: bool,
) -> Result<(Version, bool), Failure> {
    let shown = dir.display().to_string();
    let total = modelyard_client::packed_size(dir)
        .map_err(|e| Failure::Message(format!("could not read {shown}: {e}")))?;
    let mut attempt = 0;
    loop {
        if !quiet {
            eprintln!("Pushing {shown} to {owner}/{name} ({})...", size(total));
        }
        let shower = Shower::new(total, quiet);
        let progress = shower.progress();
        let pushed = c
            .versions()
            .push_streaming(owner, name, dir, Some(progress))
            .await;
        shower.done();
        match pushed {
            Err(Error::Http(e)) if attempt < RETRIES => {
                attempt += 1;
                let wait = Duration::from_secs(1 << attempt);
                eprintln!(
                    "The connection failed ({e}); retrying in {} s (attempt {} of {}).",
                    wait.as_secs(),
                    attempt + 1,
                    RETRIES + 1
                );
                tokio::time::sleep(wait).await;
            }
            other => return other.map_err(Failure::from),
        }
    }
}

/// Shows a push's progress.
struct Shower {
    bar: Option<ProgressBar>,
    state: Arc<Mutex<Lines>>,
}

struct Lines {
    quiet: bool,
    started: Instant,
    last: Option<Instant>,
    sent: u64,
    phase_said: bool,
}

impl Shower {
    fn new(total: u64, quiet: bool) -> Shower {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} left",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Shower {
            bar,
            state: Arc::new(Mutex::new(Lines {
                quiet,
                started: Instant::now(),
                last: None,
                sent: 0,
                phase_said: false,
            })),
        }
    }

    fn progress(&self) -> modelyard_client::Progress {
        let bar = self.bar.clone();
        let state = self.state.clone();
        Arc::new(move |done: u64, total: u64| {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.sent = done;
            if let Some(b) = &bar {
                b.set_position(done.min(total));
            } else if !s.quiet && s.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                s.last = Some(Instant::now());
                let secs = s.started.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "  sent {} of {} ({:.0}%, {}/s)",
                    size(done),
                    size(total),
                    done as f64 * 100.0 / total.max(1) as f64,
                    size((done as f64 / secs) as u64)
                );
            }
            if done >= total && !s.phase_said && !s.quiet {
                s.phase_said = true;
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                eprintln!("Sent; the server is reading the schema and storing the version...");
            }
        })
    }

    fn done(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn size(bytes: u64) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} bytes")
    } else if bytes < 10 * 1024 * 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{} MiB", bytes / (1024 * 1024))
    }
}
