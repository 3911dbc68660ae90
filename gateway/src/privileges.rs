//! Running as root only as long as binding the listeners needs it.
//!
//! Ports below 1024 need root (or `CAP_NET_BIND_SERVICE`); nothing after that does. With
//! `user:` (and optionally `group:`) in the policy, the gateway binds its listeners, then
//! gives up root for that user's identity before it has served anything but the first
//! connections: supplementary groups, then group, then user, and it checks that root cannot
//! be taken back. If any of that fails the process exits (fail closed). Pingora's own
//! `user`/`group` settings only apply when it daemonises, which this gateway does not.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};

/// The identity to run as after the listeners are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

/// Resolves `user` and `group` (default: the user's primary group) on this machine.
///
/// # Errors
/// The name that does not exist.
pub fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, String> {
    let found = User::from_name(user)
        .map_err(|e| format!("cannot look up user \"{user}\": {e}"))?
        .ok_or_else(|| format!("there is no user \"{user}\" on this machine"))?;
    let gid = match group {
        None => found.gid.as_raw(),
        Some(name) => Group::from_name(name)
            .map_err(|e| format!("cannot look up group \"{name}\": {e}"))?
            .ok_or_else(|| format!("there is no group \"{name}\" on this machine"))?
            .gid
            .as_raw(),
    };
    Ok(RunAs {
        user: user.to_owned(),
        uid: found.uid.as_raw(),
        gid,
    })
}

/// True when the process runs as root.
#[must_use]
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// Waits until every address accepts connections (the listeners are bound), at most 30 s.
fn wait_for_listeners(addrs: &[SocketAddr]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    addrs.iter().all(|addr| loop {
        if TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    })
}

/// Drops to `run_as` once `listeners` are bound. Every thread of the process changes identity
/// (glibc applies set*id to all threads).
///
/// # Errors
/// What failed; the caller must not go on serving.
pub fn drop_after_bind(run_as: &RunAs, listeners: &[SocketAddr]) -> Result<(), String> {
    if !wait_for_listeners(listeners) {
        return Err("the listeners did not come up within 30 s".to_owned());
    }
    let gid = Gid::from_raw(run_as.gid);
    let uid = Uid::from_raw(run_as.uid);
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}): {e}"))?;
    if !uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("root could be taken back after dropping it".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_or_are_refused() {
        let root = resolve("root", None).expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        let err = resolve("no-such-user-portcullis", None).expect_err("unknown");
        assert!(err.contains("no user \"no-such-user-portcullis\""), "{err}");
        let err = resolve("root", Some("no-such-group-portcullis")).expect_err("unknown");
        assert!(err.contains("no group"), "{err}");
    }
}
