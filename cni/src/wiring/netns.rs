//! The one place that enters network namespaces.
//!
//! A network namespace belongs to an OS thread, not to a process or an async task. Each
//! namespace gets its own thread that enters it once with setns(2), builds its state there (a
//! netlink socket stays bound to the namespace it was created in, and /proc/sys/net shows the
//! namespace of the thread that opens it), then runs jobs until its [`NetnsThread`] is dropped.
//! The thread is never reused, so no other code ever runs in a namespace it did not expect, and
//! the caller's own thread never changes namespace.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};

use nix::sched::{setns, CloneFlags};

use super::error::WiringError;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A thread living in one network namespace with state `S` built there.
pub(crate) struct NetnsThread<S> {
    label: String,
    jobs: Option<Sender<Job<S>>>,
    /// Until the first job: the outcome of entering the namespace and building `S`.
    started: Option<Receiver<Result<(), WiringError>>>,
    failed: bool,
    thread: Option<JoinHandle<()>>,
}

impl<S: 'static> NetnsThread<S> {
    /// Starts a thread that enters `netns` (`None`: stays in the caller's namespace) and calls
    /// `init` there. Returns at once, so several namespaces start in parallel; a failure shows
    /// up as the result of the first job.
    pub fn spawn<I>(netns: Option<&Path>, label: String, init: I) -> NetnsThread<S>
    where
        I: FnOnce() -> Result<S, WiringError> + Send + 'static,
    {
        let path = netns.map(Path::to_path_buf);
        let (jobs, queue) = mpsc::channel::<Job<S>>();
        let (started_tx, started) = mpsc::sync_channel(1);
        let spawned = thread::Builder::new()
            .name("trellis-netns".to_owned())
            .spawn(move || {
                let state = enter(path).and_then(|()| init());
                let mut state = match state {
                    Ok(state) => {
                        let _ = started_tx.send(Ok(()));
                        state
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                for job in queue {
                    job(&mut state);
                }
            });
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                let (tx, rx) = mpsc::sync_channel(1);
                let _ = tx.send(Err(WiringError::Thread {
                    netns: label.clone(),
                    reason: format!("cannot start: {e}"),
                }));
                return NetnsThread {
                    label,
                    jobs: None,
                    started: Some(rx),
                    failed: false,
                    thread: None,
                };
            }
        };
        NetnsThread {
            label,
            jobs: Some(jobs),
            started: Some(started),
            failed: false,
            thread,
        }
    }

    /// Runs `job` on the namespace's thread; jobs run one after another in call order.
    pub fn call<R, F>(&mut self, job: F) -> Pending<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut S) -> Result<R, WiringError> + Send + 'static,
    {
        if let Some(started) = self.started.take() {
            let outcome = started.recv().unwrap_or_else(|_| Err(self.died()));
            if let Err(e) = outcome {
                self.failed = true;
                return Pending::done(Err(e));
            }
        }
        if self.failed {
            return Pending::done(Err(WiringError::Thread {
                netns: self.label.clone(),
                reason: "not started (see the first error)".to_owned(),
            }));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job<S> = Box::new(move |state| {
            let _ = tx.send(job(state));
        });
        match self.jobs.as_ref().map(|jobs| jobs.send(job)) {
            Some(Ok(())) => Pending {
                reply: rx,
                label: self.label.clone(),
            },
            _ => Pending::done(Err(self.died())),
        }
    }

    fn died(&self) -> WiringError {
        WiringError::Thread {
            netns: self.label.clone(),
            reason: "stopped unexpectedly".to_owned(),
        }
    }
}

impl<S> Drop for NetnsThread<S> {
    fn drop(&mut self) {
        // Closing the queue ends the thread; wait so its namespace reference is gone on return.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<S> std::fmt::Debug for NetnsThread<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsThread")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: Option<PathBuf>) -> Result<(), WiringError> {
    let Some(path) = path else {
        return Ok(());
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(source) => return Err(WiringError::OpenNetns { path, source }),
    };
    // CLONE_NEWNET makes the kernel refuse (EINVAL) a file that is not a network namespace.
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|source| WiringError::EnterNetns { path, source })
}

/// The answer to a job, to be collected later so that several namespaces work in parallel.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    reply: Receiver<Result<T, WiringError>>,
    label: String,
}

impl<T> Pending<T> {
    /// An answer known up front.
    pub fn done(result: Result<T, WiringError>) -> Pending<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = tx.send(result);
        Pending {
            reply: rx,
            label: String::new(),
        }
    }

    /// Blocks until the job has run.
    pub fn wait(self) -> Result<T, WiringError> {
        self.reply.recv().unwrap_or_else(|_| {
            Err(WiringError::Thread {
                netns: self.label,
                reason: "stopped before answering".to_owned(),
            })
        })
    }
}
