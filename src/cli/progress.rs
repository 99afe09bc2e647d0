//! Draws library progress: indicatif spinners on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::Reporter;

/// A [`Reporter`] for the terminal.
pub struct TerminalReport {
    mode: Mode,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    start: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    Lines,
    Bars,
}

impl TerminalReport {
    /// Bars when stderr is a terminal, plain lines when not, nothing when quiet.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        let multi = MultiProgress::with_draw_target(if mode == Mode::Bars { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
        TerminalReport { mode, multi, bars: Mutex::new(HashMap::new()), start: Instant::now() }
    }

    fn line(&self, text: String) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("[{:>6.1}s] {text}", self.start.elapsed().as_secs_f64()),
            Mode::Bars => {
                let _ = self.multi.println(text);
            }
        }
    }

    /// Clears any bars still drawn.
    pub fn finish(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, bar) in bars.drain() {
                bar.finish_and_clear();
            }
        }
    }
}

impl Reporter for TerminalReport {
    fn phase(&self, name: &str) {
        self.finish();
        self.line(format!("==> {name}"));
    }

    fn done(&self, message: &str) {
        self.line(format!("    {message}"));
    }

    fn item(&self, key: &str, status: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => self.line(format!("    {key}: {status}")),
            Mode::Bars => {
                let Ok(mut bars) = self.bars.lock() else { return };
                let bar = bars.entry(key.to_string()).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(ProgressStyle::with_template("    {spinner} {prefix}: {msg} ({elapsed})").unwrap_or_else(|_| ProgressStyle::default_spinner()));
                    bar.set_prefix(key.to_string());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(status.to_string());
            }
        }
    }

    fn item_done(&self, key: &str, status: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => self.line(format!("    {key}: {status}")),
            Mode::Bars => {
                let bar = self.bars.lock().ok().and_then(|mut b| b.remove(key));
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                self.line(format!("    ✓ {key}: {status}"));
            }
        }
    }

    fn warn(&self, message: &str) {
        if self.mode != Mode::Quiet {
            self.line(format!("warning: {message}"));
        }
    }
}
