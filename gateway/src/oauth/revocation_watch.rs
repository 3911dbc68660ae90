//! Revocations made by another gateway sharing the state store, seen here: the verified-
//! token cache ([`super::live::LiveTokens`]) is dropped when the store's revocation epoch
//! moves.
//!
//! Two ways in, so a lost message costs at most one poll:
//! - **pushed** (Redis): a revocation publishes its new epoch on the store's channel
//!   ([`crate::store::redis::revocation_channel`]); every gateway follows it and drops its
//!   cache on the message, within a network hop of the revocation's answer;
//! - **polled** (every store): the epoch is read every [`EPOCH_POLL`], and again at once
//!   whenever the subscription is made anew (messages published while it was down are lost).
//!
//! And when neither works (the store does not answer), cached validations stop being
//! trusted [`TRUST_WITHOUT_EPOCH`] seconds after the last successful read: requests then go
//! to the store, which fails closed, rather than honour a token revoked elsewhere meanwhile.
//! Worst case, a revocation made on another gateway is honoured here after
//! `EPOCH_POLL + the store's call timeout` (message lost) and never later than
//! `TRUST_WITHOUT_EPOCH` seconds (this gateway cut off from the store).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::redis::pubsub::Heard;
use crate::state::GatewayState;
use crate::store::{now_secs, StateStore};

/// How often the store's revocation epoch is read.
pub const EPOCH_POLL: Duration = Duration::from_secs(1);
/// Seconds cached validations stay trusted after the last successful read of the epoch.
pub const TRUST_WITHOUT_EPOCH: i64 = 3;

/// The channel followed now: which store it belongs to, and what it has heard.
struct Following {
    channel: String,
    target: String,
    heard: watch::Receiver<Heard>,
    seen: Heard,
}

enum Event {
    Poll,
    Heard(Option<Heard>),
}

/// Follows the revocation channel (Redis) and polls the epoch (every store).
pub struct RevocationWatch {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for RevocationWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut following: Option<Following> = None;
        let mut poll = tokio::time::interval(EPOCH_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let store = self.state.current().store.clone();
            follow_current(&store, &mut following);
            let event = tokio::select! {
                _ = poll.tick() => Event::Poll,
                heard = next_heard(&mut following) => Event::Heard(heard),
                _ = shutdown.changed() => return,
            };
            match event {
                Event::Poll => read_epoch(&self.state, &store).await,
                Event::Heard(None) => following = None,
                Event::Heard(Some(heard)) => {
                    let Some(current) = following.as_mut() else {
                        continue;
                    };
                    let seen = std::mem::replace(&mut current.seen, heard);
                    if heard.messages != seen.messages
                        && self.state.carry().live.observe_store_epoch(heard.last)
                    {
                        log::debug!(
                            "revocation epoch {} announced; verified tokens dropped",
                            heard.last
                        );
                    }
                    if heard.subscriptions != seen.subscriptions {
                        read_epoch(&self.state, &store).await;
                    }
                }
            }
        }
    }
}

/// Follows the current store's channel (a reload may have named another store, or none).
fn follow_current(store: &StateStore, following: &mut Option<Following>) {
    let Some((client, channel)) = store.revocation_channel() else {
        *following = None;
        return;
    };
    let same = following
        .as_ref()
        .is_some_and(|f| f.channel == channel && f.target == client.target());
    if !same {
        *following = client.subscribe(channel.clone()).map(|heard| Following {
            channel,
            target: client.target().to_owned(),
            heard,
            seen: Heard::default(),
        });
    }
}

/// The next change of what the followed channel heard; never, when nothing is followed.
async fn next_heard(following: &mut Option<Following>) -> Option<Heard> {
    match following {
        Some(following) => match following.heard.changed().await {
            Ok(()) => Some(*following.heard.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Reads the store's epoch: drops the cache when it moved, and extends the trust in cached
/// validations; when the store does not answer, limits that trust.
async fn read_epoch(state: &GatewayState, store: &StateStore) {
    let live = &state.carry().live;
    match store.revocations().revocation_epoch().await {
        Ok(epoch) => {
            if live.observe_store_epoch(epoch) {
                log::debug!("state store: revocation epoch {epoch}; verified tokens dropped");
            }
            live.trust_until(now_secs() + TRUST_WITHOUT_EPOCH);
        }
        Err(error) => {
            live.trust_at_most_until(now_secs() + TRUST_WITHOUT_EPOCH);
            log::error!("state store: cannot read the revocation epoch: {error}");
        }
    }
}
