//! Following a pub/sub channel: how a revocation made on one gateway reaches the caches of
//! every other one within a network round trip.
//!
//! A subscription needs a connection of its own (a subscribed connection can do nothing
//! else). It is made to the first node that answers (in a Cluster, any node relays every
//! message published on any other), re-made with backoff when it drops, and checked with a
//! `PING` every [`PING_EVERY`] so a silently dead link (a partition, a node frozen) is
//! noticed too. Messages published while no subscription stood are lost: that is why the
//! follower reports every new subscription ([`Heard::subscriptions`]), so its reader can
//! look up what it may have missed, and why readers also poll.

use std::time::Duration;

use ::redis::Client;
use futures_util::StreamExt;
use tokio::sync::watch;

/// How often a standing subscription is checked with a `PING`.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// How long that `PING` may take before the link is taken for dead.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to subscribe.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the follower has heard so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heard {
    /// Messages heard (those that are not a number are ignored).
    pub messages: u64,
    /// The number the last one carried.
    pub last: u64,
    /// Subscriptions made so far: when it grows, messages may have been lost before it.
    pub subscriptions: u64,
}

/// Subscribes to `channel` and publishes what it hears, until every receiver is gone.
pub(super) async fn follow(
    nodes: Vec<Client>,
    channel: String,
    heard: watch::Sender<Heard>,
    target: String,
    made: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut backoff = Duration::from_millis(20);
    let mut failures = 0u32;
    let mut next_node = 0usize;
    while !heard.is_closed() {
        let Some(node) = nodes.get(next_node % nodes.len().max(1)) else {
            return;
        };
        next_node += 1;
        match subscribe(node, &channel).await {
            Ok(subscription) => {
                if failures > 0 {
                    log::info!("redis {target}: following \"{channel}\" again");
                }
                failures = 0;
                backoff = Duration::from_millis(20);
                heard.send_modify(|heard| heard.subscriptions += 1);
                made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                listen(subscription, &heard).await;
                log::warn!(
                    "redis {target}: the subscription to \"{channel}\" dropped; re-subscribing"
                );
            }
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    log::warn!(
                        "redis {target}: cannot subscribe to \"{channel}\" ({error}); retrying"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

type Subscription = (::redis::aio::PubSubSink, ::redis::aio::PubSubStream);

async fn subscribe(node: &Client, channel: &str) -> ::redis::RedisResult<Subscription> {
    let connect = async {
        let (mut sink, stream) = node.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok((sink, stream))
    };
    match tokio::time::timeout(PING_TIMEOUT, connect).await {
        Ok(result) => result,
        Err(_) => Err(::redis::RedisError::from((
            ::redis::ErrorKind::Io,
            "subscribing timed out",
        ))),
    }
}

/// Reads messages until the link drops, fails a `PING`, or nobody listens any more.
async fn listen((mut sink, mut stream): Subscription, heard: &watch::Sender<Heard>) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return };
                let number = std::str::from_utf8(message.get_payload_bytes())
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok());
                if let Some(number) = number {
                    heard.send_modify(|heard| {
                        heard.messages += 1;
                        heard.last = number;
                    });
                }
            }
            _ = ping.tick() => {
                if heard.is_closed() {
                    return;
                }
                let answered = tokio::time::timeout(PING_TIMEOUT, sink.ping::<String>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
