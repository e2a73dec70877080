//! Progress bars for interactive commands (`backup`, `restore`, `verify`,
//! `status --watch`). A bar draws on stderr only when stderr is a terminal and the command
//! prints a table; otherwise it is hidden and an update costs an atomic add. Log lines are
//! written through [`LogWriter`], which lifts the bars while a line is printed so that
//! neither garbles the other.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

/// Set to any value to keep bars off on a terminal too (e.g. when recording a session).
pub const DISABLE_ENV: &str = "LAKEVAULT_NO_PROGRESS";

fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Whether bars should draw: human (table) output, stderr a terminal that can redraw a
/// line, and not switched off.
pub fn wanted(human_output: bool) -> bool {
    draws(
        human_output,
        std::io::stderr().is_terminal(),
        std::env::var_os(DISABLE_ENV).is_some(),
        std::env::var("TERM").ok().as_deref(),
    )
}

/// The decision of [`wanted`] over its inputs, apart from the process's terminal and
/// environment so that each input can be tested.
fn draws(human_output: bool, stderr_terminal: bool, disabled: bool, term: Option<&str>) -> bool {
    human_output && stderr_terminal && !disabled && term != Some("dumb")
}

/// One progress line. Cheap to clone (shared); `Default` is hidden.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Draws nothing.
    pub fn hidden() -> Self {
        Self::default()
    }

    /// A running count with no known total (a listing finds its total as it goes):
    /// `⠋ backup [00:01:12] 1,204,332 blobs compared raw: 3/16 shards, 1,204 to copy`
    /// (the message is cut to the terminal's width, so the line never wraps).
    pub fn counter(enabled: bool, prefix: &str, unit: &str) -> Self {
        Self::start(
            enabled,
            None,
            prefix,
            &format!(
                "{{spinner}} {{prefix}} [{{elapsed_precise}}] {{human_pos}} {unit} {{wide_msg}}"
            ),
        )
    }

    /// A bar towards a known total, which may still grow (`inc_length`).
    pub fn bar(enabled: bool, prefix: &str, total: u64, unit: &str) -> Self {
        Self::start(
            enabled,
            Some(total),
            prefix,
            &format!(
                "{{prefix}} [{{elapsed_precise}}] [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{wide_msg}}"
            ),
        )
    }

    fn start(enabled: bool, total: Option<u64>, prefix: &str, template: &str) -> Self {
        if !enabled {
            return Self::hidden();
        }
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::no_length(),
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = bars().add(bar.with_style(style).with_prefix(prefix.to_string()));
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar: Some(bar) }
    }

    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }

    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn set_position(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(n);
        }
    }

    pub fn set_length(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(n);
        }
    }

    pub fn inc_length(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc_length(n);
        }
    }

    pub fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// Removes the line; the command's summary follows on stdout.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// stderr for log lines, written with the bars lifted. Use as a `tracing_subscriber`
/// writer (`with_writer(LogWriter::default)`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bars = bars();
        if bars.is_hidden() {
            return std::io::stderr().write(buf);
        }
        bars.suspend(|| std::io::stderr().write_all(buf))
            .map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_progress_draws_nothing_and_accepts_updates() {
        let p = Progress::counter(false, "backup", "blobs compared");
        assert!(!p.is_visible());
        p.inc(5);
        p.inc_length(3);
        p.set_message("x");
        p.finish();
    }

    #[test]
    fn bars_draw_only_for_humans_on_a_terminal_that_redraws() {
        // The one case that draws, then each input switched on its own.
        assert!(draws(true, true, false, Some("xterm-256color")));
        assert!(draws(true, true, false, None));
        assert!(!draws(false, true, false, Some("xterm")), "json output");
        assert!(
            !draws(true, false, false, Some("xterm")),
            "stderr not a terminal"
        );
        assert!(!draws(true, true, true, Some("xterm")), "switched off");
        assert!(!draws(true, true, false, Some("dumb")), "TERM=dumb");
    }
}
