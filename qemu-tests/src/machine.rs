//! [`Machine`]: one QEMU run, its decoded log so far, and waiting on it.

use std::fmt;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use esker_logdecode::qemu::{Outcome, QemuConfig, QemuRun};
use esker_logdecode::{LogDecoder, LogEvent};

/// Lines of log shown with a failure.
const TAIL_LINES: usize = 40;

/// Why a test failed, with the context needed to see why.
pub struct Failure {
    reason: String,
    command_line: Option<String>,
    tail: Vec<String>,
}

impl Failure {
    /// A failure before any QEMU was started (no image, bad configuration).
    pub fn setup(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            command_line: None,
            tail: Vec::new(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(command_line) = &self.command_line {
            write!(f, "\nQEMU: {command_line}")?;
            if self.tail.is_empty() {
                write!(f, "\n(no log lines)")?;
            } else {
                write!(f, "\nlast {} log lines:", self.tail.len())?;
                for line in &self.tail {
                    write!(f, "\n{line}")?;
                }
            }
        }
        Ok(())
    }
}

/// Same as `Display`: libtest prints the `Err` of a test with `Debug`.
impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Failure {}

/// A booted QEMU machine. Dropping it kills QEMU.
pub struct Machine {
    qemu: QemuRun,
    command_line: String,
    history: Vec<LogEvent>,
    /// Index in `history` after the last matched line.
    cursor: usize,
    exited: Option<Outcome>,
    exit_code: Option<i32>,
}

impl Machine {
    /// Starts QEMU as `config` says, decoding its log with the ELFs of `image_dir`.
    pub fn boot(config: &QemuConfig, image_dir: &Path) -> Result<Self, Failure> {
        let boot_file = config.boot_file();
        if !boot_file.is_file() {
            return Err(Failure::setup(format!(
                "{} does not exist: run `cargo xtask image` (and `cargo xtask image \
                 --selftest`) first",
                boot_file.display()
            )));
        }
        let decoder = LogDecoder::new(image_dir)
            .map_err(|err| Failure::setup(format!("cannot decode this image's log: {err}")))?;
        let qemu = QemuRun::spawn(config, decoder, None)
            .map_err(|err| Failure::setup(format!("cannot start QEMU: {err}")))?;
        Ok(Self {
            qemu,
            command_line: config.command_line(),
            history: Vec::new(),
            cursor: 0,
            exited: None,
            exit_code: None,
        })
    }

    /// Boots `image_dir/esker.elf` through PVH with the default machine.
    pub fn pvh(image_dir: &Path, append: Option<String>) -> Result<Self, Failure> {
        Self::boot(&QemuConfig::pvh(image_dir, append), image_dir)
    }

    /// Boots `image_dir/esker.elf` through PVH on one CPU under `-icount
    /// shift=0,sleep=off`: the guest's clocks (TSC, LAPIC timer, PIT) advance with the
    /// instructions it executes, not with the host's time, so what a test measures in
    /// guest time does not depend on how loaded the host is. (One CPU: with several,
    /// icount runs them round-robin on one host thread and a busy CPU can hold it for
    /// seconds of guest time, which starves the others.)
    pub fn pvh_icount(image_dir: &Path) -> Result<Self, Failure> {
        let mut config = QemuConfig::pvh(image_dir, None);
        config.icount = true;
        config.cpus = 1;
        Self::boot(&config, image_dir)
    }

    /// Boots `image_dir/esker.elf` through PVH with `cpus` CPUs (real-time clocks).
    pub fn pvh_smp(image_dir: &Path, cpus: u32) -> Result<Self, Failure> {
        let mut config = QemuConfig::pvh(image_dir, None);
        config.cpus = cpus;
        Self::boot(&config, image_dir)
    }

    /// Types `text` at the machine's console (COM1's input).
    pub fn type_text(&mut self, text: &str) -> Result<(), Failure> {
        self.qemu
            .send(text.as_bytes())
            .map_err(|error| self.fail(format!("cannot type at the console: {error}")))
    }

    /// Every event received so far.
    pub fn history(&self) -> &[LogEvent] {
        &self.history
    }

    /// Waits for the next line (after the previously matched one) containing `needle`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<LogEvent, Failure> {
        self.expect_match(&format!("a line containing {needle:?}"), timeout, |event| {
            event.text.contains(needle)
        })
    }

    /// Waits for the next line (after the previously matched one) for which `matches`
    /// holds; `what` describes it for the failure message.
    pub fn expect_match(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&LogEvent) -> bool,
    ) -> Result<LogEvent, Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(offset) = self.history[self.cursor..].iter().position(&matches) {
                let at = self.cursor + offset;
                self.cursor = at + 1;
                return Ok(self.history[at].clone());
            }
            self.cursor = self.history.len();
            if !self.receive(deadline)? {
                return Err(self.fail(format!(
                    "{what} did not appear within {timeout:?}{}",
                    self.exit_note()
                )));
            }
        }
    }

    /// Waits until every needle has appeared (in any order) after the previously matched
    /// line; moves past the last of them.
    pub fn expect_all(&mut self, needles: &[&str], timeout: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        let start = self.cursor;
        loop {
            let found: Vec<Option<usize>> = needles
                .iter()
                .map(|needle| {
                    self.history[start..]
                        .iter()
                        .position(|event| event.text.contains(needle))
                })
                .collect();
            if found.iter().all(Option::is_some) {
                let last = found.iter().flatten().max().copied().unwrap_or(0);
                self.cursor = self.cursor.max(start + last + 1);
                return Ok(());
            }
            if !self.receive(deadline)? {
                let missing: Vec<&str> = needles
                    .iter()
                    .zip(&found)
                    .filter(|(_, at)| at.is_none())
                    .map(|(needle, _)| *needle)
                    .collect();
                return Err(self.fail(format!(
                    "no line containing {missing:?} within {timeout:?}{}",
                    self.exit_note()
                )));
            }
        }
    }

    /// Waits for QEMU to exit; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<i32, Failure> {
        let deadline = Instant::now() + timeout;
        while self.receive(deadline)? {}
        match (self.exited, self.exit_code) {
            (Some(_), Some(code)) => Ok(code),
            (Some(outcome), None) => Err(self.fail(format!(
                "QEMU did not exit normally: {}",
                outcome.describe()
            ))),
            (None, _) => Err(self.fail(format!("QEMU still running after {timeout:?}"))),
        }
    }

    /// A failure with this machine's command line and log tail.
    pub fn fail(&self, reason: impl Into<String>) -> Failure {
        let skip = self.history.len().saturating_sub(TAIL_LINES);
        Failure {
            reason: reason.into(),
            command_line: Some(self.command_line.clone()),
            tail: self.history[skip..]
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Takes one event into the history. `Ok(false)` when nothing more will come before
    /// `deadline` (timed out, or QEMU exited and every event is in).
    fn receive(&mut self, deadline: Instant) -> Result<bool, Failure> {
        if self.exited.is_some() {
            return Ok(false);
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.qemu.recv_timeout(timeout) {
            Ok(timed) => {
                self.history.push(timed.event);
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) => Ok(false),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self
                    .qemu
                    .wait()
                    .map_err(|err| self.fail(format!("cannot wait for QEMU: {err}")))?;
                self.exited = Some(Outcome::from_status(status));
                self.exit_code = status.code();
                Ok(false)
            }
        }
    }

    fn exit_note(&self) -> String {
        match self.exited {
            Some(outcome) => format!(" (QEMU has exited: {})", outcome.describe()),
            None => String::new(),
        }
    }
}
