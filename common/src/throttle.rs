//! Backing off when the service is busy, without another retry loop.
//!
//! The SDK pipeline owns request retries. What it cannot do is slow the whole worker down
//! when an account is throttling it: every copy in flight would keep hitting the account,
//! each retrying on its own. [`AdaptiveLimit`] is the worker's copy concurrency, managed
//! additive-increase / multiplicative-decrease: [`ThrottlePolicy`], a per-try pipeline
//! policy, halves the limit when a response says the service is busy (`503`, or `500
//! OperationTimeout`; at most once per cool-down, so one burst counts once) and lets it grow
//! back by one per window of successful responses. The same policy can cap the request
//! rate of the process (`--max-requests-per-second`).

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long after a decrease further busy signals are ignored: the copies already in
/// flight answer with the old concurrency for a while.
const COOL_DOWN: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct LimitState {
    /// Current limit, fractional so that additive increase can be spread over a window.
    limit: f64,
    last_decrease: Option<Instant>,
    /// Lowest limit reached, for the run summary.
    lowest: usize,
}

/// A concurrency limit that shrinks when the service is busy and grows back slowly.
#[derive(Debug)]
pub struct AdaptiveLimit {
    max: usize,
    state: Mutex<LimitState>,
    in_flight: AtomicUsize,
    changed: Notify,
}

/// One unit of the limit; released on drop.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<AdaptiveLimit>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::SeqCst);
        // One unit came free: one waiter may take it. Waking every waiter would have each
        // of them check and all but one wait again — with a message's hundreds of items
        // waiting, that was most of a worker's CPU per copy.
        self.limit.changed.notify_one();
    }
}

impl AdaptiveLimit {
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max,
            state: Mutex::new(LimitState {
                limit: max as f64,
                last_decrease: None,
                lowest: max,
            }),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current limit (at least 1).
    pub fn limit(&self) -> usize {
        (self.lock().limit.floor() as usize).clamp(1, self.max)
    }

    /// The lowest limit reached so far.
    pub fn lowest(&self) -> usize {
        self.lock().lowest
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until fewer than `limit()` permits are out, then takes one. A waiter woken
    /// for a unit that another took first waits again; one dropped while woken passes the
    /// wake-up on to the next waiter (`tokio::sync::Notify::notify_one`), so no free unit
    /// is left with waiters asleep.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            // Register before checking, so a release between check and wait is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let limit = self.limit();
            let taken = self
                .in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok();
            if taken {
                return Permit {
                    limit: Arc::clone(self),
                };
            }
            notified.await;
        }
    }

    /// The service said it is busy: halve the limit (once per cool-down).
    pub fn on_busy(&self) {
        self.on_busy_at(Instant::now());
    }

    fn on_busy_at(&self, now: Instant) {
        let mut s = self.lock();
        if s.last_decrease
            .is_some_and(|t| now.duration_since(t) < COOL_DOWN)
        {
            return;
        }
        s.limit = (s.limit / 2.0).max(1.0);
        s.last_decrease = Some(now);
        s.lowest = s.lowest.min(s.limit.floor() as usize);
        tracing::info!(
            limit = s.limit.floor() as usize,
            "service busy: copy concurrency lowered"
        );
    }

    /// A request succeeded: grow by one per window of `limit` successes.
    pub fn on_success(&self) {
        let grew = {
            let mut s = self.lock();
            let before = s.limit.floor();
            s.limit = (s.limit + 1.0 / s.limit).min(self.max as f64);
            s.limit.floor() > before
        };
        if grew {
            // One more unit under the limit.
            self.changed.notify_one();
        }
    }
}

/// Spaces requests out to at most a given rate across the process.
#[derive(Debug)]
pub struct RateCap {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateCap {
    pub fn per_second(rate: f64) -> Arc<Self> {
        Arc::new(Self {
            interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            next: Mutex::new(Instant::now()),
        })
    }

    /// How long the caller must wait for its slot (and books the slot).
    fn reserve(&self) -> Duration {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let slot = (*next).max(now);
        *next = slot + self.interval;
        slot - now
    }
}

/// Per-try policy: waits for the rate cap, sends, and reports busy or successful responses
/// to the adaptive limit.
#[derive(Debug, Default, Clone)]
pub struct ThrottlePolicy {
    pub limit: Option<Arc<AdaptiveLimit>>,
    pub rate: Option<Arc<RateCap>>,
}

/// Whether a response means the service is throttling or overloaded.
pub fn is_busy(status: u16, code: Option<&str>) -> bool {
    status == 503 || (status == 500 && code == Some("OperationTimeout"))
}

#[async_trait]
impl Policy for ThrottlePolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if let Some(rate) = &self.rate {
            let wait = rate.reserve();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let result = next[0].send(ctx, request, &next[1..]).await;
        if let Some(limit) = &self.limit {
            match &result {
                Ok(response) => {
                    let status = u16::from(response.status());
                    let code = response.headers().get_optional_str(
                        &azure_core::http::headers::HeaderName::from_static("x-ms-error-code"),
                    );
                    if is_busy(status, code) {
                        crate::metrics::throttled_response();
                        limit.on_busy();
                    } else if status < 400 {
                        limit.on_success();
                    }
                }
                Err(e) => {
                    if let azure_core::error::ErrorKind::HttpResponse {
                        status, error_code, ..
                    } = e.kind()
                        && is_busy(u16::from(*status), error_code.as_deref())
                    {
                        crate::metrics::throttled_response();
                        limit.on_busy();
                    }
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_halves_once_per_cool_down_and_success_grows_back() {
        let limit = AdaptiveLimit::new(16);
        let t0 = Instant::now();
        limit.on_busy_at(t0);
        assert_eq!(limit.limit(), 8);
        limit.on_busy_at(t0 + Duration::from_millis(500));
        assert_eq!(limit.limit(), 8, "one burst counts once");
        limit.on_busy_at(t0 + COOL_DOWN + Duration::from_millis(1));
        assert_eq!(limit.limit(), 4);
        assert_eq!(limit.lowest(), 4);
        // Additive increase: about one step per window of `limit` successes.
        for _ in 0..3 {
            limit.on_success();
        }
        assert_eq!(limit.limit(), 4);
        for _ in 0..2 {
            limit.on_success();
        }
        assert_eq!(limit.limit(), 5);
        for _ in 0..1000 {
            limit.on_success();
        }
        assert_eq!(limit.limit(), 16, "never above the configured maximum");
        for i in 0..20 {
            limit.on_busy_at(t0 + COOL_DOWN * (i + 3));
        }
        assert_eq!(limit.limit(), 1, "never below one");
    }

    #[tokio::test]
    async fn acquire_waits_for_a_free_unit_under_the_current_limit() {
        let limit = AdaptiveLimit::new(2);
        let a = limit.acquire().await;
        let _b = limit.acquire().await;
        let waiting = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "at the limit");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released unit is taken")
            .expect("task");
        assert_eq!(limit.in_flight(), 2);
        drop(c);
        assert_eq!(limit.in_flight(), 1);
    }

    /// A waker that counts its wake-ups.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_released_unit_wakes_one_waiter_not_all() {
        let limit = AdaptiveLimit::new(1);
        let held = futures::executor::block_on(limit.acquire());
        let wakes = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut waiting: Vec<_> = (0..50).map(|_| Box::pin(limit.acquire())).collect();
        for w in &mut waiting {
            assert!(w.as_mut().poll(&mut cx).is_pending(), "at the limit");
        }
        drop(held);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one unit, one wake-up");
        let mut taken = Vec::new();
        for w in &mut waiting {
            if let std::task::Poll::Ready(permit) = w.as_mut().poll(&mut cx) {
                taken.push(permit);
            }
        }
        assert_eq!(taken.len(), 1, "the woken waiter took the unit");
    }

    #[tokio::test]
    async fn a_waiter_dropped_after_its_wake_up_passes_it_on() {
        let limit = AdaptiveLimit::new(1);
        let held = limit.acquire().await;
        let first = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The first waiter goes away (its message was cancelled) as the unit comes free.
        first.abort();
        drop(held);
        let permit = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the free unit reaches the other waiter")
            .expect("task");
        assert_eq!(limit.in_flight(), 1);
        drop(permit);
    }

    #[test]
    fn the_rate_cap_spaces_reservations() {
        let cap = RateCap::per_second(10.0);
        let waits: Vec<Duration> = (0..5).map(|_| cap.reserve()).collect();
        assert!(waits[0] < Duration::from_millis(5));
        assert!(waits[4] >= Duration::from_millis(350), "{waits:?}");
    }

    #[test]
    fn busy_responses_are_recognised() {
        assert!(is_busy(503, Some("ServerBusy")));
        assert!(is_busy(500, Some("OperationTimeout")));
        assert!(!is_busy(500, Some("InternalError")));
        assert!(!is_busy(404, None));
    }
}
