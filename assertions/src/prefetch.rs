//! The work a step asks the gateway to await before the request pipeline runs (a key set
//! to fetch, an introspection call, a state-store read), so that the steps themselves stay
//! synchronous and never do I/O. The type lives in the core, not in any one step's module.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

/// One step's (or one sequence's) prefetch work. It fills caches the step reads later; it
/// returns nothing, so a failed fetch shows as a cache miss the step refuses (fail closed).
pub type PrefetchWork = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a step's awaited I/O produced, handed back to that step (which knows its type).
pub type Awaited = Box<dyn Any + Send + Sync>;

/// I/O a step awaits at its own place in the request pipeline ([`crate::Assertion::awaits`]).
pub type AwaitedWork = Pin<Box<dyn Future<Output = Awaited> + Send + 'static>>;
