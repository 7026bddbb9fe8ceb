//! Jobs: every upload is one (issue #8).
//!
//! - [`model`]: ids, states and their order, the record, the idempotency key.
//! - `store`: one file per job, written atomically; reading them back at start-up.

// Until wired (issue #8): the handlers, the image service and the daemon call this next.
#![allow(dead_code)]

pub mod model;
mod store;
