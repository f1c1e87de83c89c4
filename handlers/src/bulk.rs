//! Large ingest bodies are framed and checked on a few threads of their own, at the lowest
//! CPU priority (`SCHED_IDLE`).
//!
//! A full 10 MiB body costs tens of milliseconds of CPU. On actix's shared blocking pool that
//! work competed as an equal with the HTTP workers, the writer and PostgreSQL, so one
//! tenant's megabyte uploads, even within its rate limit, doubled the other tenants' p99
//! on two cores. Here it only takes CPU no one else wants: any other thread that wakes up
//! preempts it at once (a nice value would not do that against another process, such as
//! PostgreSQL, in another scheduling group), and an idle core still runs it at once, so an
//! uncontended large body is as fast as before.
//!
//! A job whose request has gone (client disconnected, request timed out) is skipped, and it
//! does not keep its body alive while it waits: the queue holds only a weak reference to it.

use std::sync::{mpsc, Arc, Mutex, Weak};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A handle to the pool; cloning shares it. The threads end when every handle is dropped.
#[derive(Clone)]
pub struct BulkPool {
    jobs: mpsc::Sender<Job>,
}

/// The pool has no thread left to run the job (the hub is shutting down).
#[derive(Debug)]
pub struct Gone;

impl BulkPool {
    /// Starts `threads` threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("bulk-parse-{i}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while waiting for a job, never while running it.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work(input)` on the pool and waits for its answer.
    pub async fn run<I, T, F>(&self, input: I, work: F) -> Result<T, Gone>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: FnOnce(I) -> T + Send + 'static,
    {
        // The future owns the input; the queued job only points at it. Dropping the future
        // (its request is gone) frees the input and turns the job into a no-op.
        let slot = Arc::new(Mutex::new(Some(input)));
        let weak: Weak<Mutex<Option<I>>> = Arc::downgrade(&slot);
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let input = weak
                .upgrade()
                .and_then(|slot| slot.lock().ok().and_then(|mut s| s.take()));
            if let Some(input) = input {
                let _ = reply.send(work(input));
            }
        });
        self.jobs.send(job).map_err(|_| Gone)?;
        let answer = answer.await.map_err(|_| Gone);
        drop(slot);
        answer
    }
}

/// Puts the calling thread under `SCHED_IDLE` (Linux keeps a policy per thread). Best effort:
/// a failure leaves the thread at the default priority.
fn lower_this_threads_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a system call that reads `param`, a live local, and nothing else of ours.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "Lowering the bulk-parse thread's priority failed."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn runs_work_at_the_lowest_priority() {
        let pool = BulkPool::start(1).unwrap();
        // SAFETY: a system call with no pointer arguments.
        let policy = pool
            .run((), |()| unsafe { libc::sched_getscheduler(0) })
            .await
            .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        let sum = pool.run(vec![1, 2, 3], |v| v.iter().sum::<i32>()).await;
        assert_eq!(sum.unwrap(), 6);
    }

    #[actix_web::test]
    async fn a_dropped_request_frees_its_input_and_skips_its_work() {
        let pool = BulkPool::start(1).unwrap();
        // Hold the only thread so the next job stays queued.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let blocker = {
            let pool = pool.clone();
            actix_web::rt::spawn(async move {
                pool.run((), move |()| {
                    let _ = started.send(());
                    let _ = held.recv();
                })
                .await
            })
        };
        running.await.unwrap();

        let input = Arc::new(());
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = {
            let (input, ran) = (input.clone(), ran.clone());
            pool.run(input, move |_input| {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        // Poll it once so the job is queued, then drop it, as actix drops a gone request.
        let mut queued = Box::pin(queued);
        assert!(futures_util::FutureExt::now_or_never(queued.as_mut()).is_none());
        drop(queued);
        assert_eq!(
            Arc::strong_count(&input),
            1,
            "the queued job kept its input"
        );

        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        // A job after it runs, so the dropped one has been dequeued by now.
        pool.run((), |()| ()).await.unwrap();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
