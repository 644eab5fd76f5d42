//! The two loads: closed loop (`c` clients, each sending its next request when the last is
//! answered) and open loop (requests sent on a fixed schedule whatever the answers, latency
//! counted from the scheduled send time). Latencies go to an HDR histogram (microseconds, 3
//! significant digits).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::Channel;

use super::args::LoadgenArgs;
use super::load::{one, pushback, Load};
use super::outcome::Failures;
use super::summary::LevelSummary;
use super::DiffgapClient;

/// The clients of a run, one per connection; load clients take them in turn.
pub(super) type Clients = [DiffgapClient<Channel>];

pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The outcome of one load level.
#[derive(Debug)]
pub struct LevelResult {
    pub ok: u64,
    pub failures: Failures,
    /// The time the rate is counted over, and the successful requests answered in it.
    pub wall: Duration,
    pub ok_in_wall: u64,
    /// Latency of successful requests, in microseconds.
    pub latency: Histogram<u64>,
}

impl LevelResult {
    fn empty() -> Self {
        Self {
            ok: 0,
            failures: Failures::default(),
            wall: Duration::ZERO,
            ok_in_wall: 0,
            latency: histogram(),
        }
    }

    pub fn requests_per_s(&self) -> f64 {
        self.ok_in_wall as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e3
    }

    pub(super) fn summary(&self, load: &str, items: usize) -> LevelSummary {
        LevelSummary {
            load: load.to_owned(),
            ok: self.ok,
            errors: self.failures.total(),
            requests_per_s: self.requests_per_s(),
            items_per_s: self.requests_per_s() * items as f64,
            p50_ms: self.ms(0.5),
            p95_ms: self.ms(0.95),
            p99_ms: self.ms(0.99),
            refused: self.failures.refused,
            refusal_p50_ms: self.failures.refusal_ms(0.5),
            refusal_p99_ms: self.failures.refusal_ms(0.99),
            other_errors: self.failures.other.clone(),
            server_rss_mib: None,
        }
    }
}

/// How long a closed-loop level runs and how much of its start is not counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct LevelTime {
    /// The level's longest time.
    pub max: Duration,
    /// Its uncounted start.
    pub warmup: Duration,
}

impl LevelTime {
    pub(super) fn new(args: &LoadgenArgs) -> Self {
        let max = Duration::from_secs_f64(args.max_seconds.max(0.0));
        Self {
            max,
            warmup: Duration::from_secs_f64(args.warmup_seconds.max(0.0)).min(max / 4),
        }
    }
}

/// `concurrency` clients, each sending its next request when the last is answered, until
/// `requests` are sent or `time.max` has passed. The rate counts the requests answered while every
/// client was still sending (up to the first client's stop), so that the drain at the end,
/// with fewer clients, does not lower the saturation figure.
pub(super) async fn closed_loop(
    clients: &Clients,
    load: &Arc<Load>,
    concurrency: usize,
    requests: usize,
    time: LevelTime,
) -> LevelResult {
    let LevelTime { max, warmup } = time;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..concurrency.max(1) {
        let mut client = clients[k % clients.len()].clone();
        let (load, next) = (load.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            // Latency of all requests, and of those sent after the warm-up.
            let (mut all, mut h) = (histogram(), histogram());
            let (mut ok, mut failures) = (0u64, Failures::default());
            let mut answered = Vec::new();
            let stopped = loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || start.elapsed() >= max {
                    break start.elapsed();
                }
                let t = Instant::now();
                let steady = t.duration_since(start) >= warmup;
                match one(&mut client, &load, i).await {
                    Ok(()) => {
                        ok += 1;
                        let us = t.elapsed().as_micros() as u64;
                        all.saturating_record(us);
                        if steady {
                            h.saturating_record(us);
                        }
                        answered.push(start.elapsed());
                    }
                    Err(status) => {
                        // Refusals are counted, not logged: an overload run has thousands.
                        let refusal = status.code() == tonic::Code::ResourceExhausted;
                        if !refusal && failures.other.is_empty() {
                            tracing::warn!("request failed: {status}");
                        }
                        failures.record(status.code(), t.elapsed(), steady);
                        if let Some(wait) = pushback(&status).filter(|_| load.honor_pushback) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            };
            (all, h, ok, failures, answered, stopped)
        }));
    }
    let mut all = histogram();
    let mut out = LevelResult::empty();
    let mut answered = Vec::new();
    let mut first_stop = None::<Duration>;
    for task in tasks {
        if let Ok((a, h, ok, failures, times, stopped)) = task.await {
            all.add(&a).expect("same bounds");
            out.latency.add(&h).expect("same bounds");
            out.ok += ok;
            out.failures.merge(failures);
            answered.extend(times);
            first_stop = Some(first_stop.map_or(stopped, |s| s.min(stopped)));
        }
    }
    let stop = first_stop.unwrap_or_else(|| start.elapsed());
    let (wall, counted, steady) = counting_window(&answered, warmup, stop);
    out.wall = wall;
    out.ok_in_wall = counted;
    if !steady || out.latency.is_empty() {
        out.latency = all;
    }
    out
}

/// The time a closed-loop level's rate is counted over and the answers in it: from the end of
/// the warm-up to the first client's stop, or the whole level (false) when too short a level
/// (e.g. few --requests) leaves nothing after its warm-up.
fn counting_window(
    answered: &[Duration],
    warmup: Duration,
    stop: Duration,
) -> (Duration, u64, bool) {
    let until_stop = || answered.iter().filter(move |&&t| t <= stop);
    let steady = until_stop().filter(|&&t| t > warmup).count() as u64;
    if stop > warmup && steady > 0 {
        (stop - warmup, steady, true)
    } else {
        (stop, until_stop().count() as u64, false)
    }
}

/// Requests sent at `rate` per second for `duration`; latency from each scheduled send time.
pub(super) async fn open_loop(
    clients: &Clients,
    load: &Arc<Load>,
    rate: f64,
    duration: Duration,
) -> LevelResult {
    let n = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let (mut client, load) = (clients[i % clients.len()].clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let r = one(&mut client, &load, i).await;
            (r.map_err(|s| s.code()), at.elapsed())
        }));
    }
    let mut out = LevelResult::empty();
    for task in tasks {
        match task.await {
            Ok((Ok(()), latency)) => {
                out.ok += 1;
                out.latency.saturating_record(latency.as_micros() as u64);
            }
            Ok((Err(code), latency)) => out.failures.record(code, latency, true),
            Err(_) => out
                .failures
                .record(tonic::Code::Unknown, Duration::ZERO, true),
        }
    }
    out.wall = start.elapsed();
    out.ok_in_wall = out.ok;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_leaves_the_warm_up_out() {
        let ms = Duration::from_millis;
        // 10 answers per second for 10 s, then nothing: the rate after a 2 s warm-up.
        let answered: Vec<Duration> = (1..=100).map(|i| ms(i * 100)).collect();
        let (wall, n, steady) = counting_window(&answered, ms(2000), ms(10_000));
        assert!(steady);
        assert_eq!((wall, n), (ms(8000), 80));
        // Answers past the first client's stop do not count.
        let (wall, n, _) = counting_window(&answered, ms(2000), ms(5000));
        assert_eq!((wall, n), (ms(3000), 30));
        // A level that ended within its warm-up counts from its start.
        let (wall, n, steady) = counting_window(&answered[..10], ms(2000), ms(1000));
        assert!(!steady);
        assert_eq!((wall, n), (ms(1000), 10));
    }

    #[test]
    fn quantiles_in_milliseconds() {
        let mut r = LevelResult {
            ok: 100,
            wall: Duration::from_secs(2),
            ok_in_wall: 100,
            ..LevelResult::empty()
        };
        for us in 1..=100u64 {
            r.latency.record(us * 1000).expect("in range");
        }
        assert!((r.ms(0.5) - 50.0).abs() < 0.1, "{}", r.ms(0.5));
        assert!((r.ms(0.99) - 99.0).abs() < 0.1, "{}", r.ms(0.99));
        assert!((r.requests_per_s() - 50.0).abs() < 1e-9);
    }
}
