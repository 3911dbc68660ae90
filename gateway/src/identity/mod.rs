//! IP identity awareness: the table of who has which address that a DHCP server or a NAC
//! fills through the userauth API ([`userauth`], served by `crate::admin::userauth` on the
//! admin listener, configured by [`api`]), and the directory `require_ip_identity` reads it
//! through ([`directory`]), whose noted traffic [`upkeep`] writes behind.

pub mod api;
pub mod directory;
pub mod upkeep;
pub mod userauth;
