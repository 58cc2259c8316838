//! A running QEMU: its COM1 output decoded on a thread into a channel of events.
//!
//! Two threads per machine: one reads QEMU's stdout (COM1), saves the raw bytes if asked
//! and decodes them; one turns QEMU's own stderr into `qemu` events. The channel closes
//! when QEMU has closed both, i.e. when it has exited. Dropping a [`QemuRun`] kills QEMU.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{QEMU_PROGRAM, QemuConfig};
use crate::decoder::LogDecoder;
use crate::error::Error;
use crate::event::{EventKind, LogEvent, QEMU_SOURCE_NAME};

/// An event and when it arrived, counted from QEMU's start.
#[derive(Clone, Debug)]
pub struct TimedEvent {
    /// Time since QEMU was started.
    pub elapsed: Duration,
    /// The event.
    pub event: LogEvent,
}

/// A QEMU process and the decoded events of its serial line.
pub struct QemuRun {
    child: Child,
    /// COM1's input (QEMU's stdin).
    input: Option<std::process::ChildStdin>,
    started: Instant,
    events: Receiver<TimedEvent>,
    threads: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl QemuRun {
    /// Starts QEMU as `config` says, decoding COM1 with `decoder`; with `capture`, the raw
    /// serial bytes are also written to that file.
    pub fn spawn(
        config: &QemuConfig,
        decoder: LogDecoder,
        capture: Option<&Path>,
    ) -> Result<Self, Error> {
        let capture = capture
            .map(|path| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| Error::Capture {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
                File::create(path).map_err(|source| Error::Capture {
                    path: path.to_path_buf(),
                    source,
                })
            })
            .transpose()?;
        let started = Instant::now();
        let mut child = config
            .command()
            .spawn()
            .map_err(|source| Error::SpawnQemu {
                program: QEMU_PROGRAM.to_string(),
                source,
            })?;
        let (sender, events) = mpsc::channel();
        let mut threads = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let sender = sender.clone();
            threads.push(thread::spawn(move || {
                read_serial(stdout, decoder, capture, started, &sender);
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            threads.push(thread::spawn(move || read_stderr(stderr, started, &sender)));
        }
        let input = child.stdin.take();
        Ok(Self {
            child,
            input,
            started,
            events,
            threads,
            status: None,
        })
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// QEMU's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next event, waiting at most `timeout`. `Disconnected` means QEMU has exited and
    /// every event has been handed out.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<TimedEvent, RecvTimeoutError> {
        self.events.recv_timeout(timeout)
    }

    /// QEMU's exit status if it has exited (never blocks).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits for QEMU to exit (call once the event channel is disconnected, or after
    /// [`QemuRun::kill`]) and for the reader threads to finish.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = match self.status {
            Some(status) => status,
            None => self.child.wait()?,
        };
        self.status = Some(status);
        for thread in self.threads.drain(..) {
            // A reader that panicked has already lost its events; nothing more to do.
            let _ = thread.join();
        }
        Ok(status)
    }

    /// Types `bytes` on COM1 (QEMU's stdin).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match &mut self.input {
            Some(input) => {
                input.write_all(bytes)?;
                input.flush()
            }
            None => Err(std::io::Error::other("QEMU's input is closed")),
        }
    }

    /// Kills QEMU (if still running). Events already decoded stay in the channel.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // Fails only if QEMU has exited already, which is what we want.
            let _ = self.child.kill();
        }
    }
}

impl Drop for QemuRun {
    fn drop(&mut self) {
        self.kill();
        let _ = self.child.wait();
    }
}

fn read_serial(
    mut stdout: impl Read,
    mut decoder: LogDecoder,
    mut capture: Option<File>,
    started: Instant,
    sender: &Sender<TimedEvent>,
) {
    let mut buf = [0u8; 4096];
    let send = |events: Vec<LogEvent>| {
        let elapsed = started.elapsed();
        for event in events {
            // The receiver may be gone (the caller has what it needed); keep draining the
            // pipe so QEMU never blocks on a full one.
            let _ = sender.send(TimedEvent { elapsed, event });
        }
    };
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(file) = &mut capture
            && let Err(err) = file.write_all(&buf[..n]).and_then(|()| file.flush())
        {
            send(vec![LogEvent::plain(
                QEMU_SOURCE_NAME,
                EventKind::Raw,
                format!("<serial capture stopped: {err}>"),
            )]);
            capture = None;
        }
        send(decoder.push(&buf[..n]));
    }
    send(decoder.finish());
}

fn read_stderr(stderr: impl Read, started: Instant, sender: &Sender<TimedEvent>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let event = LogEvent::plain(QEMU_SOURCE_NAME, EventKind::Raw, line.trim_end());
        let _ = sender.send(TimedEvent {
            elapsed: started.elapsed(),
            event,
        });
    }
}
