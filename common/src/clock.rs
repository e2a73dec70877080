//! Where lakevault's own times come from (the backup time and the deletion time in a
//! record, purge's `now`): the system clock in production, the in-memory service's clock
//! in tests, so that records and the service's snapshot times share one timeline.

use time::OffsetDateTime;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;
}

/// The machine's clock (UTC).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
