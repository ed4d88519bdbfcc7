//! The cap on in-flight client requests (`--max-concurrent-requests`), split over the workers.
//!
//! Each worker thread counts its own requests on a counter no other thread writes, so a
//! request never touches a cache line that another core is writing; the process-wide figures
//! are sums read when `/metrics` is scraped. The price is that the cap holds per worker: each
//! gets the cap divided by the number of workers, rounded up.

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// One worker's requests: those admitted and not finished (response body included), and those
/// refused at its limit.
#[derive(Debug)]
#[repr(align(128))] // A line of its own (two on CPUs that fetch lines in pairs).
pub struct WorkerLoad {
    in_flight: AtomicUsize,
    refused: AtomicU64,
    limit: Option<NonZeroUsize>,
}

impl WorkerLoad {
    fn new(limit: Option<NonZeroUsize>) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            limit,
        }
    }

    /// Counts a request in, or counts it refused when the worker is at its limit.
    fn try_admit(&self) -> bool {
        if let Some(limit) = self.limit
            && self.in_flight.load(Ordering::Relaxed) >= limit.get()
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every worker's load: what the metrics read.
#[derive(Debug)]
pub struct Load {
    workers: Box<[Arc<WorkerLoad>]>,
}

impl Load {
    /// `limit` is for the whole process (`None`: no cap); each worker gets its share.
    pub fn new(workers: NonZeroUsize, limit: Option<NonZeroUsize>) -> Self {
        let share = limit.map(|limit| share(limit, workers));
        Self {
            workers: (0..workers.get())
                .map(|_| Arc::new(WorkerLoad::new(share)))
                .collect(),
        }
    }

    pub fn workers(&self) -> impl Iterator<Item = &Arc<WorkerLoad>> {
        self.workers.iter()
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Requests being served now, across workers (a scrape-time sum, not a snapshot).
    pub fn in_flight(&self) -> usize {
        self.workers
            .iter()
            .map(|worker| worker.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    pub fn refused(&self) -> u64 {
        self.workers
            .iter()
            .map(|worker| worker.refused.load(Ordering::Relaxed))
            .sum()
    }

    /// The cap as enforced: each worker's share times the workers; 0 without a cap.
    pub fn limit(&self) -> usize {
        self.workers
            .iter()
            .map(|worker| worker.limit.map_or(0, NonZeroUsize::get))
            .sum()
    }
}

/// A worker's share of the process's cap: rounded up, so the process admits at least the cap.
fn share(limit: NonZeroUsize, workers: NonZeroUsize) -> NonZeroUsize {
    limit.div_ceil(workers)
}

/// A request counted on its worker until dropped, which is when its response body has been
/// sent or abandoned. Holds whatever the worker already shares with each request, so counting
/// adds no reference count of its own.
pub struct InFlight<W: AsRef<WorkerLoad>>(Arc<W>);

impl<W: AsRef<WorkerLoad>> InFlight<W> {
    /// `None` when the worker is at its limit (the refusal is counted).
    pub fn admit(worker: Arc<W>) -> Option<Self> {
        (*worker).as_ref().try_admit().then(|| Self(worker))
    }

    pub fn worker(&self) -> &W {
        &self.0
    }
}

impl<W: AsRef<WorkerLoad>> Drop for InFlight<W> {
    fn drop(&mut self) {
        (*self.0).as_ref().finished();
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until it is dropped.
    pub struct CountedBody<B, W: AsRef<WorkerLoad>> {
        #[pin]
        body: B,
        in_flight: Option<InFlight<W>>,
    }
}

impl<B, W: AsRef<WorkerLoad>> CountedBody<B, W> {
    pub fn new(body: B, in_flight: Option<InFlight<W>>) -> Self {
        Self { body, in_flight }
    }
}

impl<B, W> Body for CountedBody<B, W>
where
    B: Body<Data = Bytes>,
    W: AsRef<WorkerLoad>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonzero(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    struct Worker(Arc<WorkerLoad>);

    impl AsRef<WorkerLoad> for Worker {
        fn as_ref(&self) -> &WorkerLoad {
            &self.0
        }
    }

    #[test]
    fn each_worker_gets_its_share_rounded_up() {
        assert_eq!(Load::new(nonzero(4), Some(nonzero(10))).limit(), 12);
        assert_eq!(Load::new(nonzero(2), Some(nonzero(10))).limit(), 10);
        assert_eq!(Load::new(nonzero(8), Some(nonzero(3))).limit(), 8);
        assert_eq!(Load::new(nonzero(3), None).limit(), 0);
    }

    #[test]
    fn admits_up_to_the_share_and_again_once_a_request_ends() {
        let load = Load::new(nonzero(2), Some(nonzero(4)));
        let worker = Arc::new(Worker(load.workers().next().unwrap().clone()));
        let first = InFlight::admit(worker.clone()).unwrap();
        let second = InFlight::admit(worker.clone()).unwrap();
        assert!(InFlight::admit(worker.clone()).is_none());
        assert_eq!((load.in_flight(), load.refused()), (2, 1));
        drop(first);
        let third = InFlight::admit(worker.clone()).unwrap();
        drop((second, third));
        assert_eq!((load.in_flight(), load.refused()), (0, 1));
    }

    #[test]
    fn without_a_cap_everything_is_admitted_and_counted() {
        let load = Load::new(nonzero(1), None);
        let worker = Arc::new(Worker(load.workers().next().unwrap().clone()));
        let admitted: Vec<_> = (0..1000)
            .map(|_| InFlight::admit(worker.clone()).unwrap())
            .collect();
        assert_eq!(load.in_flight(), 1000);
        drop(admitted);
        assert_eq!((load.in_flight(), load.refused()), (0, 0));
    }
}
