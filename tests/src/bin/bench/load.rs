//! The measuring loop: concurrent simulated callers running one operation for a warm-up and
//! then a fixed duration, bounded by a request count, and the figures of what they measured.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most requests one load sends, whatever its duration.
const MAX_REQUESTS: u64 = 2_000_000;

/// One measured load.
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) clients: usize,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    /// How the failed requests failed (an HTTP status, a timeout, a lost connection...), and
    /// how many of each.
    pub(crate) failures: BTreeMap<String, u64>,
    pub(crate) seconds: f64,
    pub(crate) latencies_us: Vec<u64>,
}

impl Row {
    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1_000.0
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.name,
            self.clients,
            self.rate(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.errors_cell()
        )
    }

    /// The error count, with what the failures were: `14 (HTTP 503: 12, timeout: 2)`.
    fn errors_cell(&self) -> String {
        if self.failures.is_empty() {
            return self.errors.to_string();
        }
        let kinds: Vec<String> = self.failures.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        format!("{} ({})", self.errors, kinds.join(", "))
    }
}

/// How a request failed, as the table names it.
pub(crate) type Failure = String;

/// Runs `clients` concurrent loops of `op` for `warmup` then `duration`, and measures the
/// second part. `op(client, i)` returns whether the request succeeded, and if not, how not.
pub(crate) async fn load<F, Fut>(
    name: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> Row
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send,
{
    let op = Arc::new(op);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (op, count) = (op.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = BTreeMap::<Failure, u64>::new();
            let (mut ok, mut i) = (0u64, 0u64);
            while Instant::now() < end && count.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS {
                let sent = Instant::now();
                let outcome = op(client, i).await;
                i += 1;
                if sent >= measure_from {
                    match outcome {
                        Ok(()) => {
                            ok += 1;
                            latencies.push(sent.elapsed().as_micros() as u64);
                        }
                        Err(failure) => *failures.entry(failure).or_default() += 1,
                    }
                }
            }
            (ok, failures, latencies)
        }));
    }
    let mut row = Row {
        name: name.into(),
        clients,
        ops: 0,
        errors: 0,
        failures: BTreeMap::new(),
        seconds: duration.as_secs_f64(),
        latencies_us: Vec::new(),
    };
    for task in tasks {
        let (ok, failures, latencies) = task.await.expect("a load task");
        row.ops += ok;
        for (failure, n) in failures {
            row.errors += n;
            *row.failures.entry(failure).or_default() += n;
        }
        row.latencies_us.extend(latencies);
    }
    row.latencies_us.sort_unstable();
    row
}

/// Runs `total` requests of `op` over `workers` concurrent workers.
pub(crate) async fn drive<F, Fut>(total: u64, workers: u64, op: F)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                op(i).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a worker");
    }
}
