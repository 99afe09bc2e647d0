//! Draws library progress: indicatif spinners on a terminal, plain lines otherwise.
//!
//! Plain lines read like a log: each item's state is printed when it changes, not every time a
//! wait polls it (`demo-default-0: not ready yet` once, then `demo-default-0: Ready`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{ItemStates, Reporter};

/// A [`Reporter`] for the terminal.
pub struct TerminalReport {
    mode: Mode,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    states: ItemStates,
    start: Instant,
}

enum Mode {
    Quiet,
    /// Timestamped lines to this writer (stderr when it is not a terminal).
    Lines(Mutex<Box<dyn Write + Send>>),
    Bars,
}

impl TerminalReport {
    /// Bars when stderr is a terminal, plain lines when not, nothing when quiet.
    pub fn new(quiet: bool) -> Self {
        if quiet {
            Self::with_mode(Mode::Quiet)
        } else if std::io::stderr().is_terminal() {
            Self::with_mode(Mode::Bars)
        } else {
            Self::lines(Box::new(std::io::stderr()))
        }
    }

    /// Plain timestamped lines to `out`.
    pub fn lines(out: Box<dyn Write + Send>) -> Self {
        Self::with_mode(Mode::Lines(Mutex::new(out)))
    }

    fn with_mode(mode: Mode) -> Self {
        let multi = MultiProgress::with_draw_target(if matches!(mode, Mode::Bars) { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
        TerminalReport { mode, multi, bars: Mutex::new(HashMap::new()), states: ItemStates::default(), start: Instant::now() }
    }

    fn line(&self, text: String) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(out) => {
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                // Progress is best effort: a closed stderr must not fail the operation.
                let _ = writeln!(out, "[{:>6.1}s] {text}", self.start.elapsed().as_secs_f64());
            }
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
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(_) => {
                if self.states.changed(key, status) {
                    self.line(format!("    {key}: {status}"));
                }
            }
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
                // Remembered so that an item_done after it prints its line, and a repeated one does not.
                let _ = self.states.changed(key, status);
            }
        }
    }

    fn item_done(&self, key: &str, status: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(_) => {
                if self.states.changed(key, status) {
                    self.line(format!("    {key}: {status}"));
                }
            }
            Mode::Bars => {
                let bar = self.bars.lock().ok().and_then(|mut b| b.remove(key));
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                if self.states.changed(key, status) {
                    self.line(format!("    ✓ {key}: {status}"));
                }
            }
        }
    }

    fn warn(&self, message: &str) {
        if !matches!(self.mode, Mode::Quiet) {
            self.line(format!("warning: {message}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A writer whose bytes the test reads afterwards.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The lines written, without their `[   1.2s] ` timestamps.
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| l.split_once("] ").map_or(l, |(_, rest)| rest).to_string()).collect()
        }
    }

    #[test]
    fn lines_print_a_repeated_state_once_and_a_changed_state_again() {
        let out = Captured::default();
        let report = TerminalReport::lines(Box::new(out.clone()));
        report.phase("waiting for nodes");
        for _ in 0..3 {
            report.item("demo-default-0", "not ready yet");
            report.item("demo-default-1", "not ready yet");
        }
        report.item_done("demo-default-1", "Ready");
        report.item("demo-default-0", "not ready yet");
        // A wait reports items that are done on every pass too.
        report.item_done("demo-default-1", "Ready");
        report.item_done("demo-default-0", "Ready");
        report.item_done("demo-default-1", "Ready");
        assert_eq!(
            out.lines(),
            [
                "==> waiting for nodes",
                "    demo-default-0: not ready yet",
                "    demo-default-1: not ready yet",
                "    demo-default-1: Ready",
                "    demo-default-0: Ready",
            ]
        );
    }

    #[test]
    fn a_state_that_comes_back_after_another_is_printed_again() {
        let out = Captured::default();
        let report = TerminalReport::lines(Box::new(out.clone()));
        report.item("w0", "not ready yet");
        report.item_done("w0", "Ready");
        report.item("w0", "not ready yet");
        report.item("w0", "not ready yet");
        assert_eq!(out.lines(), ["    w0: not ready yet", "    w0: Ready", "    w0: not ready yet"]);
    }

    #[test]
    fn lines_carry_a_timestamp_and_no_escape_codes() {
        let out = Captured::default();
        let report = TerminalReport::lines(Box::new(out.clone()));
        report.phase("network");
        report.done("+ create vpc 10.0.0.0/16");
        report.warn("slow");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.lines().all(|l| l.starts_with("[") && l.contains("s] ")), "{text}");
        assert_eq!(out.lines(), ["==> network", "    + create vpc 10.0.0.0/16", "warning: slow"]);
    }
}
