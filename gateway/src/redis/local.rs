//! A connection per serving runtime, so a request's Redis call runs on the proxy's own
//! thread: the command is written, and its answer read, by a connection driver on the same
//! runtime as the request, with no hand-off to the client's own thread and back (two thread
//! switches per call, most of what a round trip cost the proxy in CPU).
//!
//! Only long-lived multi-thread runtimes get one (Pingora's service runtimes): the
//! throw-away current-thread runtimes of `store::wait` (policy load, the CLI) and the
//! client's own runtime keep using the shared connection. A runtime's connection is made in
//! the background on first use; until it is up (or after it failed: retried after
//! [`RETRY_AFTER`]), calls take the shared path. A connection that fails with an outage is
//! dropped and made again. At most [`MAX_RUNTIMES`] runtimes are tracked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::cluster::ClusterClient;
use ::redis::{AsyncConnectionConfig, Client};
use tokio::runtime::{Handle, Id, RuntimeFlavor};

use super::connection::Connection;

/// The most runtimes given a connection of their own.
const MAX_RUNTIMES: usize = 32;
/// How long after a failed connect the next one is tried.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How a runtime's own connection is made.
#[derive(Clone)]
pub(super) enum LocalConnector {
    Standalone(Client, AsyncConnectionConfig),
    Cluster(ClusterClient),
}

enum Slot {
    Connecting,
    Ready(Connection),
    Failed(Instant),
}

/// The connections of the serving runtimes.
pub(super) struct LocalConnections {
    connector: LocalConnector,
    /// The client's own runtime, which uses the shared connection.
    own: Option<Id>,
    slots: Arc<Mutex<HashMap<Id, Slot>>>,
    /// Connections made so far.
    connects: Arc<AtomicU64>,
}

impl std::fmt::Debug for LocalConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connector holds the password: never shown.
        write!(f, "LocalConnections({} runtime(s))", self.lock().len())
    }
}

impl LocalConnections {
    pub(super) fn new(connector: LocalConnector, own: Option<Id>) -> LocalConnections {
        LocalConnections {
            connector,
            own,
            slots: Arc::default(),
            connects: Arc::default(),
        }
    }

    /// Connections made so far (first ones and reconnections).
    pub(super) fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The calling runtime's own connection when it is up; starts making it otherwise.
    pub(super) fn for_current_runtime(&self) -> Option<Connection> {
        let handle = Handle::try_current().ok()?;
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return None;
        }
        let id = handle.id();
        if Some(id) == self.own {
            return None;
        }
        let mut slots = self.lock();
        match slots.get(&id) {
            Some(Slot::Ready(connection)) => return Some(connection.clone()),
            Some(Slot::Connecting) => return None,
            Some(Slot::Failed(at)) if at.elapsed() < RETRY_AFTER => return None,
            Some(Slot::Failed(_)) => {}
            None if slots.len() >= MAX_RUNTIMES => return None,
            None => {}
        }
        slots.insert(id, Slot::Connecting);
        drop(slots);
        let connector = self.connector.clone();
        let slots = Arc::clone(&self.slots);
        let connects = Arc::clone(&self.connects);
        handle.spawn(async move {
            let made = match connector {
                LocalConnector::Standalone(client, config) => client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Local),
                LocalConnector::Cluster(client) => {
                    client.get_async_connection().await.map(Connection::Cluster)
                }
            };
            let slot = match made {
                Ok(connection) => {
                    connects.fetch_add(1, Ordering::Relaxed);
                    Slot::Ready(connection)
                }
                Err(_) => Slot::Failed(Instant::now()),
            };
            slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, slot);
        });
        None
    }

    /// Drops the calling runtime's connection after an outage: the next call makes another.
    pub(super) fn forget_current(&self) {
        if let Ok(handle) = Handle::try_current() {
            let mut slots = self.lock();
            if let Some(slot) = slots.get_mut(&handle.id()) {
                *slot = Slot::Failed(Instant::now());
            }
        }
    }
}
