//! The client's counters as Prometheus metrics, read at scrape time: the client keeps
//! plain atomics (no Prometheus on its call path) and this collector turns them into
//! families when `/metrics` is asked for.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts};

use super::RedisClient;

/// Registered once, when the Redis state store is first opened.
pub struct RedisCollector {
    client: RedisClient,
    calls: IntCounter,
    failures: IntCounter,
    timeouts: IntCounter,
    breaker_opened: IntCounter,
    breaker_refused: IntCounter,
    breaker_open: IntGauge,
    connects: IntCounter,
    subscriptions: IntCounter,
    /// Two scrapes at once must not both add the same growth.
    scraping: Mutex<()>,
}

impl std::fmt::Debug for RedisCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisCollector")
            .field(&self.client.target())
            .finish()
    }
}

impl RedisCollector {
    /// # Errors
    /// A metric name or help text Prometheus refuses (they are constants: never).
    pub fn new(client: RedisClient) -> prometheus::Result<RedisCollector> {
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        Ok(RedisCollector {
            client,
            calls: counter("portcullis_redis_calls_total", "Calls to Redis.")?,
            failures: counter(
                "portcullis_redis_failures_total",
                "Calls to Redis that failed: an error, a timeout or the open circuit.",
            )?,
            timeouts: counter(
                "portcullis_redis_timeouts_total",
                "Calls to Redis that passed their deadline.",
            )?,
            breaker_opened: counter(
                "portcullis_redis_breaker_opened_total",
                "Times the Redis circuit breaker opened.",
            )?,
            breaker_refused: counter(
                "portcullis_redis_breaker_refused_total",
                "Calls failed at once by the open circuit breaker, without a network call.",
            )?,
            connects: counter(
                "portcullis_redis_connects_total",
                "Connections to Redis made by the serving runtimes: first ones and reconnections after an outage.",
            )?,
            subscriptions: counter(
                "portcullis_redis_subscriptions_total",
                "Pub/sub subscriptions to the revocation channel made: the first one and re-subscriptions after a drop.",
            )?,
            breaker_open: IntGauge::with_opts(Opts::new(
                "portcullis_redis_breaker_open",
                "1 while the Redis circuit breaker is open, else 0.",
            ))?,
            scraping: Mutex::new(()),
        })
    }
}

/// Brings a counter up to `total` (the client's counters only grow).
fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Collector for RedisCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.calls.desc(),
            self.failures.desc(),
            self.timeouts.desc(),
            self.breaker_opened.desc(),
            self.breaker_refused.desc(),
            self.breaker_open.desc(),
            self.connects.desc(),
            self.subscriptions.desc(),
            self.client.latency().desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self
            .scraping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stats = self.client.stats();
        catch_up(&self.calls, stats.calls);
        catch_up(&self.failures, stats.failures);
        catch_up(&self.timeouts, stats.timeouts);
        catch_up(&self.breaker_opened, stats.breaker.opened);
        catch_up(&self.breaker_refused, stats.breaker.refused);
        catch_up(&self.connects, stats.connects);
        catch_up(&self.subscriptions, stats.subscriptions);
        self.breaker_open
            .set(i64::try_from(stats.breaker.open).unwrap_or(1));
        [
            self.calls.collect(),
            self.failures.collect(),
            self.timeouts.collect(),
            self.breaker_opened.collect(),
            self.breaker_refused.collect(),
            self.breaker_open.collect(),
            self.connects.collect(),
            self.subscriptions.collect(),
            self.client.latency().collect(),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::RedisCollector;
    use crate::redis::{RedisClient, RedisSettings, RedisUrl};

    #[test]
    fn scrapes_show_the_clients_counters() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let client = RedisClient::connect(&RedisSettings::new(
            RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).expect("url"),
        ))
        .expect("client");
        let _ = crate::store::wait(async {
            let _ = client.ping().await;
            Ok(())
        });
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(RedisCollector::new(client).expect("collector")))
            .expect("register");
        let text = String::from_utf8(
            prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .expect("encode")
                .into_bytes(),
        )
        .expect("utf8");
        for line in [
            "portcullis_redis_calls_total 1",
            "portcullis_redis_failures_total 1",
            "portcullis_redis_breaker_open 0",
            "portcullis_redis_call_seconds_count 0",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        // A second scrape adds nothing that did not happen.
        let again = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encode");
        assert!(again.contains("portcullis_redis_calls_total 1"), "{again}");
    }
}
